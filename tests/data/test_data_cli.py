from __future__ import annotations

import argparse

from mae3d.cli import data as data_cli
from mae3d.io.atomic import read_json


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mae3d")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_list(capsys):
    assert _run("list", "--require") == 0
    out = capsys.readouterr().out
    assert "21 of 21 embedded files present" in out and "MISSING" not in out
    assert "mni2009c_t1" in out and "MIT (nibabel)" in out


def test_corpus_and_nnunet(tmp_path, capsys):
    assert _run("corpus", str(tmp_path / "c")) == 0
    assert (tmp_path / "c" / "manifest.json").is_file()
    assert _run("nnunet", "tumour", str(tmp_path / "raw"), "--spacing", "4", "--set", "tumour_id=950") == 0
    folder = tmp_path / "raw" / "Dataset950_BrainTumour"
    assert capsys.readouterr().out.strip().endswith(str(folder))
    assert read_json(folder / "dataset.json")["mae3d"]["spacing_mm"] == 4.0
    assert _run("nnunet", "tumour", str(tmp_path / "raw"), "--set", "tumour_id=950") == 1
    assert "tumour not written" in capsys.readouterr().err
