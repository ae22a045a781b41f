"""corpus info (counts, header voxels, missing/unreadable files) and duplicate detection."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel
import pytest
import SimpleITK as sitk

from mae3d.corpus.duplicates import dedupe, find_duplicates
from mae3d.corpus.from_folder import build_from_folder
from mae3d.corpus.info import summarize
from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, ManifestError


def test_counts_and_voxels(bids_tree: Path):
    m = build_from_folder(bids_tree)
    s = summarize(m)
    assert (s.datasets, s.subjects, s.sessions, s.images) == (2, 3, 4, 6)
    expected_voxels = sum(sitk.ReadImage(str(r.path)).GetNumberOfPixels() for r in m.images())
    assert s.total_voxels == expected_voxels == 3 * 33 * 41 * 25 + 2 * 64 * 64 * 12 + 64 * 64 * 10
    a, b = s.per_dataset["dsA"], s.per_dataset["dsB"]
    assert (a.subjects, a.sessions, a.images, a.missing) == (2, 3, 4, 0)
    assert (b.subjects, b.sessions, b.images, b.voxels) == (1, 1, 2, 33 * 41 * 25 + 64 * 64 * 12)
    t1 = s.per_modality["T1w"]
    assert (t1.subjects, t1.images) == (2, 3)
    assert {k: v.images for k, v in s.per_modality.items()} == {"T1w": 3, "FLAIR": 2, "T2w": 1}
    assert s.ok and not s.missing and not s.unreadable and not s.duplicates
    text = s.format()
    assert "collection collection: 2 datasets, 3 subjects, 4 sessions, 6 images" in text
    assert any(line.split()[:4] == ["dsA", "2", "3", "4"] for line in text.splitlines())
    assert "no missing, unreadable or duplicate files" in text
    assert s.to_dict()["per_modality"]["FLAIR"]["images"] == 2


def test_missing_unreadable_and_header_only(bids_tree: Path, tmp_path: Path, anatomical_nii: Path):
    m = build_from_folder(bids_tree)
    t1 = m.collection.datasets["dsB"].subjects["sub-01"].sessions["ses-DEFAULT"].images[1]
    assert t1.name == "sub-01_T1w"
    t1.anatomy_mask = str(tmp_path / "gone_mask.mha")
    m.collection.datasets["dsB"].subjects["sub-01"].sessions["ses-DEFAULT"].images[0].path = str(
        tmp_path / "gone.mhd")
    # header intact, voxel data cut off: counted all the same, since only the header is read
    (tmp_path / "truncated.nii").write_bytes(anatomical_nii.read_bytes()[:1000])
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti at all")
    four_d = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    for name, path in (("trunc", "truncated.nii"), ("corrupt", "corrupt.nii.gz"), ("series", str(four_d))):
        m.add_image("dsC", "sub-01", "ses-DEFAULT", ImageEntry(name=name, path=str(tmp_path / path)))
    s = summarize(m)
    assert [(x.image_id, x.kind) for x in s.missing] == [
        ("dsB__sub-01__ses-DEFAULT__sub-01_FLAIR", "image"),
        ("dsB__sub-01__ses-DEFAULT__sub-01_T1w", "anatomy_mask")]
    assert s.per_dataset["dsB"].missing == 1 and s.per_dataset["dsB"].voxels == 33 * 41 * 25
    assert s.per_dataset["dsC"].voxels == 33 * 41 * 25
    reasons = {u.image_id.rsplit("__", 1)[1]: u.reason for u in s.unreadable}
    assert set(reasons) == {"corrupt", "series"} and "not a 3D image" in reasons["series"]
    assert not s.ok
    text = s.format()
    assert "missing files (2):" in text and str(tmp_path / "gone.mhd") in text
    assert "unreadable images (2)" in text

    quick = summarize(m, read_headers=False)
    assert quick.total_voxels is None and not quick.unreadable and len(quick.missing) == 2
    assert "not read voxels" in quick.format()


def _two_images(path_a: str, path_b: str) -> Manifest:
    m = Manifest(Collection("dups"), Path("/"))
    m.add_image("d", "s1", "ses-1", ImageEntry("t1", path_a, "T1w"))
    m.add_image("d", "s2", "ses-1", ImageEntry("t1", path_b, "T1w"))
    return m


def test_same_file_under_two_ids(anatomical_nii: Path):
    m = _two_images(str(anatomical_nii), str(anatomical_nii.parent / "." / anatomical_nii.name))
    (group,) = find_duplicates(m)
    assert group.kind == "path"
    assert [r.image_id for r in group.records] == ["d__s1__ses-1__t1", "d__s2__ses-1__t1"]
    kept, dropped = dedupe(m.images())
    assert [r.image_id for r in kept] == ["d__s1__ses-1__t1"]
    assert dropped[0][1] == "duplicate entry: same file as image d__s1__ses-1__t1"
    s = summarize(m)
    assert not s.ok and "duplicates (1 groups" in s.format()
    assert s.to_dict()["duplicates"][0]["image_ids"] == ["d__s1__ses-1__t1", "d__s2__ses-1__t1"]


def test_symlinked_copy_is_not_a_duplicate(anatomical_nii: Path, tmp_path: Path):
    os.symlink(anatomical_nii, tmp_path / "link.nii")
    assert find_duplicates(_two_images(str(anatomical_nii), str(tmp_path / "link.nii"))) == []


def test_duplicate_image_ids(tmp_path: Path, anatomical_nii: Path):
    m = Manifest(Collection("dups"), tmp_path)
    m.add_image("d", "s", "x", ImageEntry("a", str(anatomical_nii)))
    with pytest.raises(ManifestError, match="duplicate image id d__s__x__a"):
        m.add_image("d", "s", "x", ImageEntry("a", "other.nii"))
    # ids made of "__"-joined parts can still collide across levels; a hand-written file can repeat names
    shutil.copy(anatomical_nii, tmp_path / "b.nii")
    m.add_image("d__s", "x", "a", ImageEntry("q", str(tmp_path / "b.nii")))
    m.add_image("d", "s__x", "a", ImageEntry("q", str(tmp_path / "c.nii")))
    data = m.to_dict()
    data["collection"]["datasets"]["d"]["subjects"]["s"]["sessions"]["x"]["images"].append(
        {"name": "a", "path": "again.nii"})
    loaded = Manifest.from_dict(data, tmp_path)
    groups = find_duplicates(loaded)
    assert sorted((g.kind, g.key) for g in groups) == [("image_id", "d__s__x__a"),
                                                         ("image_id", "d__s__x__a__q")]
    kept, dropped = dedupe(loaded.images())
    assert len(kept) == 2 and len(dropped) == 2
    assert all(why.startswith("duplicate entry: image id") for _, why in dropped)
