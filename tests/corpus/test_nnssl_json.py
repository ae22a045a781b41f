"""nnssl pretrain_data.json import/export."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from mae3d.corpus.from_folder import build_from_folder
from mae3d.corpus.manifest import ManifestError, load_manifest, save_manifest
from mae3d.corpus.nnssl_json import build_from_nnssl_json, quality_lookup, to_nnssl_json


def test_import_resolves_nnssl_raw_and_maps_fields(nnssl_json, bids_tree: Path, monkeypatch):
    path, _ = nnssl_json
    monkeypatch.setenv("nnssl_raw", str(bids_tree))
    m = build_from_nnssl_json(path)
    recs = {r.image_id: r for r in m.images()}
    assert sorted(recs) == [
        "dsA__sub-01__ses-1__sub-01_ses-1_FLAIR.nii.gz",
        "dsA__sub-01__ses-1__sub-01_ses-1_T1w.nii",
        "dsA__sub-01__ses-2__sub-01_ses-2_T1w.nii.gz",
        "dsA__sub-02__ses-DEFAULT__sub-02_T2w.nrrd",
    ]
    assert all(r.path.is_file() for r in recs.values())
    t1 = recs["dsA__sub-01__ses-1__sub-01_ses-1_T1w.nii"]
    assert t1.path == bids_tree / "dsA/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii"
    assert t1.anonymization_mask == bids_tree / "dsA/sub-01/ses-1/anat/sub-01_ses-1_T1w_defacemask.nii.gz"
    assert t1.anatomy_mask is None
    # metadata merged from dataset/subject/session/image info; stored paths keep the $ form
    assert t1.metadata["age"] == 31 and t1.metadata["scanner"] == "A" and t1.metadata["manufacturer"] == "X"
    assert m.collection.datasets["dsA"].subjects["sub-01"].sessions["ses-1"].images[0].path.startswith(
        "$nnssl_raw/")
    assert m.collection.name == "Dataset745_Toy" and m.collection.metadata["collection_index"] == 745
    # quality: (modality, derived_from) lookup; an explicit image_info value wins; no match -> absent
    assert {i.rsplit("__", 1)[1]: r.metadata.get("quality") for i, r in recs.items()} == {
        "sub-01_ses-1_T1w.nii": 1.5, "sub-01_ses-1_FLAIR.nii.gz": 2.0,
        "sub-01_ses-2_T1w.nii.gz": 3.0, "sub-02_T2w.nrrd": 0.5}


def test_env_mapping_overrides_environment(nnssl_json, bids_tree: Path, monkeypatch):
    path, _ = nnssl_json
    monkeypatch.delenv("nnssl_raw", raising=False)
    with pytest.raises(ManifestError, match="nnssl_raw"):
        list(build_from_nnssl_json(path).images())
    m = build_from_nnssl_json(path, env={"nnssl_raw": str(bids_tree)})
    assert all(r.path.is_file() for r in m.images())
    monkeypatch.setenv("nnssl_raw", "/nonexistent")
    assert all(r.path.is_file() for r in m.images())  # the explicit mapping wins


def test_round_trip(nnssl_json, monkeypatch, tmp_path: Path):
    path, data = nnssl_json
    assert to_nnssl_json(build_from_nnssl_json(path)) == data
    # ... also through a saved and reloaded manifest
    save_manifest(build_from_nnssl_json(path), tmp_path / "m.json")
    assert to_nnssl_json(load_manifest(tmp_path / "m.json")) == data


def test_export_of_a_folder_manifest_reimports_identically(bids_tree: Path, tmp_path: Path):
    m = build_from_folder(bids_tree, relative_to=tmp_path)
    out = tmp_path / "pretrain_data.json"
    out.write_text(json.dumps(to_nnssl_json(m)))
    again = build_from_nnssl_json(out)
    def norm(p: Path | None) -> str | None:
        return None if p is None else os.path.normpath(p)

    def key(man):
        return sorted((r.image_id, norm(r.path), r.modality, norm(r.anatomy_mask), norm(r.anonymization_mask))
                      for r in man.images())

    assert key(again) == key(m)
    assert sum(r.anatomy_mask is not None for r in again.images()) == 3


def test_relative_paths_in_json_resolve_against_its_folder(tmp_path: Path, bids_tree: Path):
    images = [{"name": "a", "image_path": "data/a.nii", "modality": "T1w"}]
    subjects = {"s": {"subject_id": "s", "sessions": {"x": {"session_id": "x", "images": images}}}}
    data = {"collection_index": 1, "collection_name": "rel",
            "datasets": {"d": {"dataset_index": "d", "subjects": subjects}}}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.nii").symlink_to(bids_tree / "dsA/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii")
    (tmp_path / "pretrain_data.json").write_text(json.dumps(data))
    m = build_from_nnssl_json(tmp_path / "pretrain_data.json")
    (rec,) = m.images()
    assert rec.path == tmp_path / "data" / "a.nii" and rec.path.is_file()
    exported = to_nnssl_json(m)["datasets"]["d"]["subjects"]["s"]["sessions"]["x"]["images"][0]
    assert exported["image_path"] == (tmp_path / "data" / "a.nii").as_posix()  # nnssl has no manifest folder


def test_malformed_files_name_the_entry(nnssl_json, tmp_path: Path):
    _, data = nnssl_json
    bad = copy.deepcopy(data)
    del bad["datasets"]["dsA"]["subjects"]["sub-02"]["sessions"]["ses-DEFAULT"]["images"][0]["image_path"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match=r"subjects/sub-02/sessions/ses-DEFAULT/images\[0\].*image_path"):
        build_from_nnssl_json(tmp_path / "bad.json")
    dup = copy.deepcopy(data)
    ses1 = dup["datasets"]["dsA"]["subjects"]["sub-01"]["sessions"]["ses-1"]["images"]
    ses1.append(dict(ses1[0]))
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    with pytest.raises(ManifestError, match="duplicate image id"):
        build_from_nnssl_json(tmp_path / "dup.json")
    (tmp_path / "x.json").write_text(json.dumps({"collection_name": "x"}))
    with pytest.raises(ManifestError, match=r"not an nnssl pretrain_data\.json"):
        build_from_nnssl_json(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        build_from_nnssl_json(tmp_path / "missing.json")


def test_quality_lookup_rules():
    info = {"image_quality_score": [
        {"modality": "T1w", "derived_from": None, "image_quality_score": 1.0},
        {"modality": "T2w", "image_quality_score": 4},  # no derived_from key: any
        {"modality": "FLAIR", "derived_from": None, "image_quality_score": "n/a"},  # not numeric
    ]}
    assert quality_lookup(info, "T1w", None) == 1.0
    assert quality_lookup(info, "T1w", "MP2RAGE") is None
    assert quality_lookup(info, "T2w", "anything") == 4.0
    assert quality_lookup(info, "FLAIR", None) is None
    assert quality_lookup({}, "T1w", None) is None
