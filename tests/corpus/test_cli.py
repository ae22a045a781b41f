"""``mae3d corpus build`` / ``mae3d corpus info`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mae3d.cli import main as cli_main
from mae3d.corpus.manifest import load_manifest


@pytest.fixture(autouse=True)
def _only_corpus_command(monkeypatch):
    # other stages' command modules are developed in parallel; this test needs only "corpus"
    monkeypatch.setattr(cli_main, "COMMANDS", ("corpus",))


def test_build_folder_refuses_overwrite_then_info(bids_tree: Path, tmp_path: Path, capsys):
    out = tmp_path / "m" / "manifest.json"
    assert cli_main.main(["corpus", "build", "--from", "folder", str(bids_tree), "-o", str(out),
                          "--name", "toy"]) == 0
    m = load_manifest(out)
    assert m.collection.name == "toy" and len(list(m.images())) == 6
    before = out.read_bytes()
    capsys.readouterr()
    assert cli_main.main(["corpus", "build", "--from", "folder", str(bids_tree / "dsA"), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli_main.main(["corpus", "build", "--from", "folder", str(bids_tree / "dsA"), "-o", str(out),
                          "--overwrite", "--relative"]) == 0
    data = json.loads(out.read_text())
    sessions = data["collection"]["datasets"]["dsA"]["subjects"]["sub-01"]["sessions"]
    paths = [img["path"] for ses in sessions.values() for img in ses["images"]]
    assert paths and all(p.startswith("../") for p in paths)
    assert all(r.path.is_file() for r in load_manifest(out).images())

    capsys.readouterr()
    assert cli_main.main(["corpus", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 images" in text and "no missing, unreadable or duplicate files" in text
    assert cli_main.main(["corpus", "info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4
    assert summary["total_voxels"] == 2 * 33 * 41 * 25 + 64 * 64 * 12 + 64 * 64 * 10


def test_build_nnssl_and_info_with_env(nnssl_json, bids_tree: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("nnssl_raw", raising=False)
    out = tmp_path / "manifest.json"
    assert cli_main.main(["corpus", "build", "--from", "nnssl", str(nnssl_json[0]), "-o", str(out)]) == 0
    assert "1 datasets, 4 images" in capsys.readouterr().out  # building needs no $nnssl_raw
    capsys.readouterr()
    assert cli_main.main(["corpus", "info", str(out), "--json"]) == 2  # $nnssl_raw cannot be resolved
    assert "nnssl_raw" in capsys.readouterr().err
    assert cli_main.main(["corpus", "info", str(out), "--json", "--env", f"nnssl_raw={bids_tree}",
                          "--strict"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["missing"] == []


def test_build_nnunet_and_strict_info_on_missing_file(nnunet_raw: Path, tmp_path: Path, capsys):
    out = tmp_path / "manifest.json"
    assert cli_main.main(["corpus", "build", "--from", "nnunet", str(nnunet_raw), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    ses = data["collection"]["datasets"]["Dataset042_Toy"]["subjects"]["case01"]["sessions"]["ses-DEFAULT"]
    ses["images"][0]["path"] = str(tmp_path / "gone.nii.gz")
    out.write_text(json.dumps(data))
    capsys.readouterr()
    assert cli_main.main(["corpus", "info", str(out)]) == 0
    assert cli_main.main(["corpus", "info", str(out), "--strict"]) == 1
    assert "gone.nii.gz" in capsys.readouterr().out


def test_bad_source_is_one_line_error(tmp_path: Path, capsys):
    assert cli_main.main(["corpus", "build", "--from", "folder", str(tmp_path / "nope"),
                          "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder" in err
    assert not (tmp_path / "m.json").exists()
