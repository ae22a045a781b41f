"""Fixtures: small corpora in tmp folders made from real volumes (nibabel's T1, pyradiomics brain MRs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk


@pytest.fixture(scope="session")
def pyradiomics_dir() -> Path:
    path = Path(sys.prefix) / "share" / "mae3d" / "pyradiomics"
    if not (path / "brain1_image.nrrd").is_file():
        pytest.skip(f"pyradiomics data not installed in {path} (run scripts/setup.sh)")
    return path


@pytest.fixture(scope="session")
def real_volumes(anatomical_nii: Path, pyradiomics_dir: Path) -> dict[str, object]:
    """The real images the fixtures are cut from (crops keep every file tiny)."""
    brain1 = sitk.ReadImage(str(pyradiomics_dir / "brain1_image.nrrd"))[96:160, 96:160, 6:18]  # 64x64x12
    brain2 = sitk.ReadImage(str(pyradiomics_dir / "brain2_image.nrrd"))[96:160, 96:160, 6:16]  # 64x64x10
    t1 = nib.load(str(anatomical_nii))
    return {"t1_path": anatomical_nii, "t1": t1, "brain1": brain1, "brain2": brain2}


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def _nifti(img: nib.Nifti1Image, data: np.ndarray, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine), str(dst))
    return dst


def _sitk(img: sitk.Image, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(dst), True)
    return dst


@pytest.fixture(scope="session")
def bids_tree(tmp_path_factory: pytest.TempPathFactory, real_volumes: dict) -> Path:
    """A collection of two BIDS-like datasets (layout below); returns the collection folder.

    dsA/dataset_description.json                                   Name "Study A"
    dsA/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii                     symlink to nibabel's T1
    dsA/sub-01/ses-1/anat/sub-01_ses-1_T1w_defacemask.nii.gz       anonymisation mask of that T1
    dsA/sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz                (T1 voxels, same grid)
    dsA/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz                  pyradiomics brain1 crop
    dsA/sub-02/anat/sub-02_T2w.nrrd                                pyradiomics brain2 crop
    dsA/derivatives/masks/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz   session brain mask
    dsA/derivatives/masks/sub-01/ses-1/anat/sub-01_ses-1_desc-preproc_T1w.nii.gz  derivative, not an image
    dsA/.cache/sub-09_T1w.nii                                      hidden, skipped
    dsA/sourcedata/sub-01/anat/sub-01_T1w.nii                      pre-conversion original, skipped
    dsB/sub-01/anat/sub-01_T1w.mha  + sub-01_T1w_mask.mha          SimpleITK-written T1 + sibling mask
    dsB/sub-01/anat/sub-01_FLAIR.mhd (+ .raw)                      brain1 crop as MetaImage header+raw
    dsB/sub-01/anat/sub-01_T1w_dseg.nii.gz                         a label map: excluded
    """
    root = tmp_path_factory.mktemp("bids") / "collection"
    t1: nib.Nifti1Image = real_volumes["t1"]  # type: ignore[assignment]
    t1_data = np.asarray(t1.dataobj)
    a = root / "dsA"
    a.mkdir(parents=True)
    (a / "dataset_description.json").write_text(json.dumps({"Name": "Study A", "BIDSVersion": "1.9.0"}))
    anat = a / "sub-01" / "ses-1" / "anat"
    _link(real_volumes["t1_path"], anat / "sub-01_ses-1_T1w.nii")
    deface = np.ones(t1_data.shape, np.uint8)
    deface[:, :8, :] = 0  # the "face" slab removed
    _nifti(t1, deface, anat / "sub-01_ses-1_T1w_defacemask.nii.gz")
    _nifti(t1, t1_data, anat / "sub-01_ses-1_FLAIR.nii.gz")
    _sitk(real_volumes["brain1"], a / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii.gz")
    _sitk(real_volumes["brain2"], a / "sub-02" / "anat" / "sub-02_T2w.nrrd")
    deriv = a / "derivatives" / "masks" / "sub-01" / "ses-1" / "anat"
    brain = (t1_data > np.percentile(t1_data, 60)).astype(np.uint8)
    _nifti(t1, brain, deriv / "sub-01_ses-1_desc-brain_mask.nii.gz")
    _link(real_volumes["t1_path"], deriv / "sub-01_ses-1_desc-preproc_T1w.nii.gz")
    _link(real_volumes["t1_path"], a / ".cache" / "sub-09_T1w.nii")
    _link(real_volumes["t1_path"], a / "sourcedata" / "sub-01" / "anat" / "sub-01_T1w.nii")

    b = root / "dsB" / "sub-01" / "anat"
    t1_sitk = sitk.ReadImage(str(real_volumes["t1_path"]))
    _sitk(t1_sitk, b / "sub-01_T1w.mha")
    _sitk(sitk.Cast(t1_sitk > 40, sitk.sitkUInt8), b / "sub-01_T1w_mask.mha")
    b.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(real_volumes["brain1"], str(b / "sub-01_FLAIR.mhd"))  # writes the .raw beside it
    _nifti(t1, brain, b / "sub-01_T1w_dseg.nii.gz")
    return root


def _nnssl_image(name: str, path: str, modality: str, info: dict, anon: str | None = None) -> dict:
    return {"name": name, "image_path": path, "modality": modality, "image_info": info,
            "associated_masks": {"anonymization_mask": anon, "anatomy_mask": None}}


def _nnssl_session(ses: str, info: dict, *images: dict) -> dict:
    return {"session_id": ses, "session_info": info, "images": list(images)}


@pytest.fixture(scope="session")
def nnssl_json(tmp_path_factory: pytest.TempPathFactory, bids_tree: Path) -> tuple[Path, dict]:
    """A pretrain_data.json over ``bids_tree`` using ``$nnssl_raw`` paths (and one absolute path).

    Quality scores: ses-1 T1w 1.5 (derived_from null), ses-1 FLAIR 2.0, ses-2 T1w 3.0 (derived_from
    MP2RAGE), sub-02 T2w 0.5 (explicit in image_info; no dataset-level score for T2w).
    """
    anat = "$nnssl_raw/dsA/sub-01/ses-1/anat"
    ses1 = _nnssl_session(
        "ses-1", {"scanner": "A"},
        _nnssl_image("sub-01_ses-1_T1w.nii", f"{anat}/sub-01_ses-1_T1w.nii", "T1w",
                     {"derived_from": None, "manufacturer": "X"},
                     anon=f"{anat}/sub-01_ses-1_T1w_defacemask.nii.gz"),
        _nnssl_image("sub-01_ses-1_FLAIR.nii.gz", f"{anat}/sub-01_ses-1_FLAIR.nii.gz", "FLAIR", {}))
    ses2 = _nnssl_session(
        "ses-2", {},
        _nnssl_image("sub-01_ses-2_T1w.nii.gz",
                     str(bids_tree / "dsA/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"),  # absolute
                     "T1w", {"derived_from": "MP2RAGE"}))
    sub02 = _nnssl_session(
        "ses-DEFAULT", {},
        _nnssl_image("sub-02_T2w.nrrd", "$nnssl_raw/dsA/sub-02/anat/sub-02_T2w.nrrd", "T2w",
                     {"quality": 0.5}))
    data = {
        "collection_index": 745,
        "collection_name": "Dataset745_Toy",
        "datasets": {"dsA": {
            "dataset_index": "dsA",
            "name": "Study A",
            "dataset_info": {"image_quality_score": [
                {"modality": "T1w", "derived_from": None, "image_quality_score": 1.5},
                {"modality": "T1w", "derived_from": "MP2RAGE", "image_quality_score": 3.0},
                {"modality": "FLAIR", "derived_from": None, "image_quality_score": 2.0},
            ]},
            "subjects": {
                "sub-01": {"subject_id": "sub-01", "subject_info": {"age": 31, "sex": "F"},
                           "sessions": {"ses-1": ses1, "ses-2": ses2}},
                "sub-02": {"subject_id": "sub-02", "subject_info": {"age": 45},
                           "sessions": {"ses-DEFAULT": sub02}},
            },
        }},
    }
    path = tmp_path_factory.mktemp("nnssl") / "pretrain_data.json"
    path.write_text(json.dumps(data, indent=2))
    return path, data


@pytest.fixture(scope="session")
def nnunet_raw(tmp_path_factory: pytest.TempPathFactory, real_volumes: dict) -> Path:
    """``Dataset042_Toy``: 2 training + 1 test case with channels T1 (0000) and FLAIR (0001), plus labels."""
    root = tmp_path_factory.mktemp("nnunet_raw") / "Dataset042_Toy"
    src = real_volumes["t1_path"]
    for folder, cases in (("imagesTr", ("case01", "case02")), ("imagesTs", ("case03",))):
        for case in cases:
            for ch in (0, 1):
                _link(src, root / folder / f"{case}_{ch:04d}.nii.gz")
    for case in ("case01", "case02"):
        _link(src, root / "labelsTr" / f"{case}.nii.gz")
    (root / "imagesTr" / ".DS_Store").write_text("hidden junk")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Toy", "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    return root
