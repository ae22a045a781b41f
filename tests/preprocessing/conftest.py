"""Fixtures: small real volumes (nibabel's 2 mm T1, pyradiomics brain1) and manifests over them.

Bad-input files are made from the same real T1 (truncated, sliced, stacked, poisoned with NaN ...),
so every failure mode is exercised on a file that is otherwise a genuine scan.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, ManifestError, save_manifest
from mae3d.data.sources import locate


@pytest.fixture(scope="session")
def brain1() -> tuple[Path, Path]:
    """pyradiomics brain1: real tumour MR, 256x256x25 at 0.78x0.78x6.5 mm, with its tumour mask."""
    return locate("pyradiomics_brain1_image"), locate("pyradiomics_brain1_label")


@pytest.fixture(scope="session")
def t1(anatomical_nii) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's real T1 voxels (33x41x25, float32) and its affine (2 mm, LAS)."""
    img = nib.load(anatomical_nii)
    return np.asanyarray(img.dataobj).astype(np.float32), img.affine.copy()


def write_manifest(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Manifest with one image per entry: ``subject``, ``path`` and optional ImageEntry fields.

    An entry whose id is already taken is still written (as a hand-edited manifest could be).
    """
    m = Manifest(Collection("test"), path.parent)
    for e in entries:
        e = dict(e)
        ds, sub, ses = e.pop("dataset", "ds"), e.pop("subject"), e.pop("session", "ses-1")
        e.setdefault("name", "T1w")
        e.setdefault("modality", "T1w")
        e["path"] = str(e["path"])
        for k in ("anatomy_mask", "anonymization_mask"):
            if e.get(k) is not None:
                e[k] = str(e[k])
        try:
            m.add_image(ds, sub, ses, ImageEntry(**e))
        except ManifestError:  # a hand-edited manifest can list an id twice: keep it, prepare must cope
            m.collection.datasets[ds].subjects[sub].sessions[ses].images.append(ImageEntry(**e))
    save_manifest(m, path, overwrite=True)
    return path


@pytest.fixture(scope="session")
def manifest_writer() -> Callable[[Path, list[dict[str, Any]]], Path]:
    """``write_manifest`` for fixtures that cannot use the function-scoped ``make_manifest``."""
    return write_manifest


@pytest.fixture
def make_manifest(tmp_path) -> Callable[[list[dict[str, Any]]], Path]:
    return lambda entries, name="manifest.json": write_manifest(tmp_path / name, entries)


def _nii(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


@pytest.fixture(scope="session")
def good_volumes(tmp_path_factory, t1, anatomical_nii) -> dict[str, Path]:
    """Five different real-derived good images in NIfTI, NIfTI-gz and NRRD, plus a brain-ish mask."""
    d = tmp_path_factory.mktemp("good")
    x, aff = t1
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    out = {"a": anatomical_nii,
           "b": _nii(d / "b.nii.gz", x[2:, :, 3:], ras),
           "c": _nii(d / "c.nii.gz", x[:, ::-1, :].copy(), aff),
           "d": _nii(d / "d.nii", x[:30, 5:, :], aff)}
    img = sitk.GetImageFromArray(x[3:, :36, :].transpose(2, 1, 0).copy())
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(d / "e.nrrd"))
    out["e"] = d / "e.nrrd"
    out["a_mask"] = _nii(d / "a_mask.nii.gz", (x > np.percentile(x, 60)).astype(np.uint8), aff)
    return out


def _patched_pixdim(path: Path, arr: np.ndarray, value: float) -> Path:
    # nibabel refuses to write a NaN zoom; patch pixdim[1] (byte offset 80) of a header-only affine
    nib.save(nib.Nifti1Image(arr, None), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 80, value)
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="session")
def bad_volumes(tmp_path_factory, t1) -> dict[str, dict[str, Any]]:
    """Manifest entries (minus subject) per bad-input kind, with words the skip reason must contain."""
    d = tmp_path_factory.mktemp("bad")
    x, aff = t1
    full = _nii(d / "full.nii.gz", x, aff).read_bytes()
    (d / "full1.nii.gz").write_bytes(full)  # separate files, or they would be duplicates of each other
    (d / "full2.nii.gz").write_bytes(full)
    (d / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    nan = x.copy()
    nan[10, 10, 10] = np.nan
    inf = x.copy()
    inf[5, 5, 5] = np.inf
    hdr = ("NRRD0004\ntype: float\ndimension: 3\nsizes: 33 41 25\nspacings: 0 2 2\n"
           "endian: little\nencoding: raw\n\n")
    (d / "spacing0.nrrd").write_bytes(hdr.encode() + np.asfortranarray(x).tobytes(order="F"))
    shifted = aff.copy()
    shifted[:3, 3] += 10.0
    return {
        "truncated": {"path": d / "truncated.nii.gz", "words": "truncated"},
        "2d": {"path": _nii(d / "2d.nii.gz", x[:, :, 12], aff), "words": "2D"},
        "4d": {"path": _nii(d / "4d.nii.gz", np.stack([x, x], -1), aff), "words": "4D with 2 volumes"},
        "nan": {"path": _nii(d / "nan.nii.gz", nan, aff), "words": "NaN/Inf"},
        "inf": {"path": _nii(d / "inf.nii.gz", inf, aff), "words": "NaN/Inf"},
        "constant": {"path": _nii(d / "constant.nii.gz", np.full_like(x, 7.0), aff),
                     "words": "constant image"},
        "zeros": {"path": _nii(d / "zeros.nii.gz", np.zeros_like(x), aff), "words": "all-zero"},
        "spacing_big": {"path": _nii(d / "big.nii.gz", x, np.diag([25.0, 2, 2, 1])),
                        "words": "absurd spacing"},
        "spacing_nan": {"path": _patched_pixdim(d / "nanspacing.nii", x, float("nan")),
                        "words": "absurd spacing"},
        "spacing_zero": {"path": d / "spacing0.nrrd", "words": "spacing"},
        "mask_shape": {"path": d / "full1.nii.gz", "words": "mask shape/affine",
                       "anatomy_mask": _nii(d / "m1.nii.gz", np.ones(x[:, :, :-1].shape, np.uint8), aff)},
        "mask_affine": {"path": d / "full2.nii.gz", "words": "mask shape/affine",
                        "anonymization_mask": _nii(d / "m2.nii.gz", np.ones(x.shape, np.uint8), shifted)},
        "missing": {"path": d / "does_not_exist.nii.gz", "words": "not found"},
    }
