"""Folder/BIDS builder on a tmp tree of real volumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mae3d.corpus.from_folder import build_from_folder, guess_modality, parse_bids_name
from mae3d.corpus.manifest import ManifestError, load_manifest, save_manifest


def _by_id(manifest):
    return {r.image_id: r for r in manifest.images()}


def test_bids_collection_ids_modalities_and_masks(bids_tree: Path):
    m = build_from_folder(bids_tree)
    recs = _by_id(m)
    assert sorted(recs) == [
        "dsA__sub-01__ses-1__sub-01_ses-1_FLAIR",
        "dsA__sub-01__ses-1__sub-01_ses-1_T1w",
        "dsA__sub-01__ses-2__sub-01_ses-2_T1w",
        "dsA__sub-02__ses-DEFAULT__sub-02_T2w",
        "dsB__sub-01__ses-DEFAULT__sub-01_FLAIR",
        "dsB__sub-01__ses-DEFAULT__sub-01_T1w",
    ]  # no mask, derivative, sourcedata, hidden, .raw or dseg file is an image
    assert {i: r.modality for i, r in recs.items()} == {
        "dsA__sub-01__ses-1__sub-01_ses-1_FLAIR": "FLAIR",
        "dsA__sub-01__ses-1__sub-01_ses-1_T1w": "T1w",
        "dsA__sub-01__ses-2__sub-01_ses-2_T1w": "T1w",
        "dsA__sub-02__ses-DEFAULT__sub-02_T2w": "T2w",
        "dsB__sub-01__ses-DEFAULT__sub-01_FLAIR": "FLAIR",
        "dsB__sub-01__ses-DEFAULT__sub-01_T1w": "T1w",
    }
    assert all(r.path.is_file() and r.path.is_absolute() for r in recs.values())
    assert m.collection.name == "collection"
    assert m.collection.datasets["dsA"].metadata["dataset_name"] == "Study A"

    brain = bids_tree / "dsA/derivatives/masks/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz"
    t1 = recs["dsA__sub-01__ses-1__sub-01_ses-1_T1w"]
    assert t1.anatomy_mask == brain  # session-level BIDS derivative mask
    assert t1.anonymization_mask == t1.path.parent / "sub-01_ses-1_T1w_defacemask.nii.gz"
    flair = recs["dsA__sub-01__ses-1__sub-01_ses-1_FLAIR"]
    assert flair.anatomy_mask == brain and flair.anonymization_mask is None  # deface mask is T1w-only
    assert recs["dsA__sub-01__ses-2__sub-01_ses-2_T1w"].anatomy_mask is None
    b_t1 = recs["dsB__sub-01__ses-DEFAULT__sub-01_T1w"]
    assert b_t1.anatomy_mask == b_t1.path.parent / "sub-01_T1w_mask.mha"
    assert recs["dsB__sub-01__ses-DEFAULT__sub-01_FLAIR"].anatomy_mask is None


def test_single_dataset_root_and_name(bids_tree: Path):
    m = build_from_folder(bids_tree / "dsA", collection_name="only_a")
    assert m.collection.name == "only_a"
    assert list(m.collection.datasets) == ["dsA"]
    assert len(list(m.images())) == 4


def test_plain_folder_subjects_from_stems_and_modality_guess(tmp_path: Path, real_volumes: dict,
                                                              pyradiomics_dir: Path):
    root = tmp_path / "plain"
    (root / "scans").mkdir(parents=True)
    for name in ("brain1_image.nrrd", "brain1_label.nrrd", "brain2_image.nrrd"):
        os.symlink(pyradiomics_dir / name, root / name)
    os.symlink(real_volumes["t1_path"], root / "scans" / "patientA_T1.nii")
    os.symlink(real_volumes["t1_path"], root / "scans" / "patientA_flair.nii")
    os.symlink(real_volumes["t1_path"], root / "scans" / "patientA_flair_mask.nii")
    (root / "scans" / "notes.txt").write_text("not an image")
    for patient in ("p1", "p2"):
        os.makedirs(root / patient)
        os.symlink(real_volumes["t1_path"], root / patient / "T1.nii")
    os.symlink(real_volumes["t1_path"], root / "p1" / "T1_brainmask.nii")
    m = build_from_folder(root)
    recs = _by_id(m)
    assert {(r.subject_id, r.session_id, r.modality) for r in recs.values()} == {
        ("brain1_image", "ses-DEFAULT", "unknown"),
        ("brain2_image", "ses-DEFAULT", "unknown"),
        ("scans_patientA_T1", "ses-DEFAULT", "T1w"),
        ("scans_patientA_flair", "ses-DEFAULT", "FLAIR"),
        ("p1_T1", "ses-DEFAULT", "T1w"),
        ("p2_T1", "ses-DEFAULT", "T1w"),
    }  # the label map is excluded by default, the masks are paired
    flair = recs["plain__scans_patientA_flair__ses-DEFAULT__patientA_flair"]
    assert flair.anatomy_mask == root / "scans" / "patientA_flair_mask.nii"
    assert recs["plain__p1_T1__ses-DEFAULT__T1"].anatomy_mask == root / "p1" / "T1_brainmask.nii"
    assert recs["plain__p2_T1__ses-DEFAULT__T1"].anatomy_mask is None  # p1's mask is not p2's
    with_labels = build_from_folder(root, exclude=())
    assert "plain__brain1_label__ses-DEFAULT__brain1_label" in _by_id(with_labels)


def test_same_image_id_twice_is_refused(tmp_path: Path, real_volumes: dict, pyradiomics_dir: Path):
    os.symlink(real_volumes["t1_path"], tmp_path / "scan.nii")
    os.symlink(pyradiomics_dir / "brain1_image.nrrd", tmp_path / "scan.nrrd")
    with pytest.raises(ManifestError, match=r"duplicate image id .*scan"):
        build_from_folder(tmp_path)


def test_empty_or_missing_root(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ManifestError, match="no images found"):
        build_from_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_from_folder(tmp_path / "nope")


def test_relative_paths_survive_save_load_and_moving_the_manifest(bids_tree: Path, tmp_path: Path):
    out = tmp_path / "out"
    m = build_from_folder(bids_tree, relative_to=out)
    entry = m.collection.datasets["dsB"].subjects["sub-01"].sessions["ses-DEFAULT"].images[0]
    assert not os.path.isabs(entry.path) and entry.path.startswith("..")
    expected = {r.image_id: (r.path.resolve(), r.anatomy_mask) for r in m.images()}
    save_manifest(m, out / "manifest.json")
    loaded = load_manifest(out / "manifest.json")
    assert {r.image_id: r.path.resolve() for r in loaded.images()} == {k: v[0] for k, v in expected.items()}
    # saving into another folder re-expresses relative paths so they still hit the same files
    save_manifest(loaded, tmp_path / "elsewhere" / "deeper" / "manifest.json")
    moved = load_manifest(tmp_path / "elsewhere" / "deeper" / "manifest.json")
    assert {r.image_id: r.path.resolve() for r in moved.images()} == {k: v[0] for k, v in expected.items()}
    assert all(r.path.is_file() for r in moved.images())


@pytest.mark.parametrize(("stem", "expected"), [
    ("sub-01_ses-2_acq-mprage_T1w", ({"sub": "01", "ses": "2", "acq": "mprage"}, "T1w")),
    ("sub-A1_FLAIR", ({"sub": "A1"}, "FLAIR")),
    ("brain1_image", None),
    ("sub-01", None),
    ("sub-01_ses-1_T1w_defacemask", None),  # "T1w" is not a key-value entity
])
def test_parse_bids_name(stem, expected):
    assert parse_bids_name(stem) == expected


@pytest.mark.parametrize(("stem", "expected"), [
    ("patient7_T1", "T1w"), ("MPRAGE_sag", "T1w"), ("case-3.flair", "FLAIR"), ("t2w_axial", "T2w"),
    ("brain1_image", "unknown"), ("t1_t2_ratio", "unknown"), ("t12345", "unknown"),
])
def test_guess_modality(stem, expected):
    assert guess_modality(stem) == expected
