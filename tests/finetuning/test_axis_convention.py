"""One axis order end to end: ``mae3d prepare`` arrays == nnU-Net's fine-tuning arrays (real files).

A tiny nnU-Net raw dataset holds one real head (ROBEX's subject) stored LAS, the same head rewritten
LPS, the same head with permuted axes, a rotated direction and anisotropic spacing, and a real
anisotropic tumour MR (pyradiomics brain1, 0.78 x 0.78 x 6.5 mm) with permuted axes. The same images
go through ``mae3d prepare`` (the LAS head from its original file, the oblique one as MetaImage,
brain1 as NRRD). With fixed ("like pre-trained") plans, nnU-Net's own ``DefaultPreprocessor`` must
produce the arrays pre-training stored -- same crop box, same shape, correlation >= 0.99 -- without
any transpose or flip. The dataset's median spacing is anisotropic, so nnU-Net's planner picks a
non-identity ``transpose_forward`` that the fixed plans must override.

Then checkpoints pre-trained by mae3d (a real tiny run on that corpus), exported to nnssl and
imported back, and an nnssl/OpenMind-format checkpoint all give fixed plans of one convention.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mae3d.config import apply_overrides
from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, save_manifest
from mae3d.data.sources import locate
from mae3d.finetuning import PlanError
from mae3d.finetuning.planning import CONFIGURATION, derive_fixed_plans, prepare_plans
from mae3d.finetuning.pretrained import PretrainedCheckpoint, read_checkpoint
from mae3d.io.atomic import read_json
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.runner import prepare
from mae3d.preprocessing.store import PreprocessedCorpus
from mae3d.transfer import export_nnssl, load_checkpoint

SPACING = 4.0  # the tiny checkpoint's pre-training spacing (tests/finetuning/conftest.py)


def _rotated(img: sitk.Image, degrees: float) -> sitk.Image:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    out = sitk.Image(img)
    out.SetDirection((rot @ np.array(img.GetDirection()).reshape(3, 3)).ravel().tolist())
    return out


def _source_images() -> dict[str, tuple[sitk.Image, Path | None]]:
    """case -> (image as nnU-Net gets it, original file prepare reads instead or None)."""
    robex = sitk.ReadImage(str(locate("robex_t1")), sitk.sitkFloat32)  # LAS, 1.5 mm
    oblique = _rotated(sitk.PermuteAxes(robex, [2, 0, 1]), 25.0)  # permuted axes + rotation
    oblique.SetSpacing((1.25, 4.5, 1.5))  # ITK (x, y, z) -> array order (1.5, 4.5, 1.25): anisotropic
    brain1 = sitk.ReadImage(str(locate("pyradiomics_brain1_image")), sitk.sitkFloat32)  # 6.5 mm slices
    return {
        "las": (robex, locate("robex_t1")),
        "lps": (sitk.DICOMOrient(robex, "LPS"), None),
        "oblique": (oblique, None),
        "aniso": (sitk.PermuteAxes(brain1, [0, 2, 1]), None),  # thick axis in the middle
    }


@pytest.fixture(scope="module")
def axis_setup(tmp_path_factory, tiny_checkpoint, fast_cfg):
    """(raw dataset, prepare output, PreparedPlans) over the same real files."""
    root = tmp_path_factory.mktemp("axis")
    raw = root / "raw" / "Dataset960_Axis"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    src = root / "src"
    src.mkdir()
    manifest = Manifest(Collection("axis"), root)
    for case, (img, original) in _source_images().items():
        sitk.WriteImage(img, str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
        arr = sitk.GetArrayViewFromImage(img)
        label = sitk.GetImageFromArray((arr > np.percentile(arr, 70)).astype(np.uint8))
        label.CopyInformation(img)
        sitk.WriteImage(label, str(raw / "labelsTr" / f"{case}.nii.gz"))
        if original is None:  # prepare reads its own copy: MetaImage for the oblique head (a third format)
            original = src / (case + {"oblique": ".mha", "aniso": ".nrrd"}.get(case, ".nii.gz"))
            sitk.WriteImage(img, str(original))
        manifest.add_image("ds", case, "ses-1", ImageEntry(name="T1w", path=str(original), modality="T1w"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "fg": 1}, "numTraining": 4,
        "file_ending": ".nii.gz"}))
    man = save_manifest(manifest, root / "manifest.json")
    cfg = PrepareConfig(target_spacing=(SPACING,) * 3, patch_size=(32, 32, 32), workers=0)
    report = prepare(man, root / "prepared", cfg, progress=False)
    assert len(report.done) == 4, report.summary()
    plans = prepare_plans(raw, root / "nnUNet_preprocessed", fast_cfg(patch_size=None),
                          read_checkpoint(tiny_checkpoint))
    return raw, root / "prepared", plans


@pytest.mark.parametrize("case", ["las", "lps", "oblique", "aniso"])
def test_prepare_arrays_equal_nnunet_finetuning_arrays(axis_setup, case):
    raw, prepared, plans = axis_setup
    base = read_json(plans.preprocessed_dir / "nnUNetResEncUNetLPlans.json")
    assert base["transpose_forward"] == [1, 0, 2]  # nnU-Net alone would transpose this dataset ...
    assert plans.plans["transpose_forward"] == plans.plans["transpose_backward"] == [0, 1, 2]  # ... not here
    assert plans.configuration["use_mask_for_norm"] == [False]  # the checkpoint's whole-box z-score
    corpus = PreprocessedCorpus(prepared)
    assert corpus.plan["normalization"] == "zscore" and corpus.plan["orientation"] == "as-stored"
    cid = f"ds__{case}__ses-1__T1w"
    ours = corpus.image(cid)[0]
    theirs = blosc2.open(str(plans.data_dir / f"{case}.b2nd"), mode="r")[0]
    props = corpus.properties(cid)
    assert props["spacing"] == [SPACING] * 3
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)  # same grid: no resampling needed
    corr = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
    assert corr >= 0.99, corr
    assert float(np.abs(ours - theirs).max()) < 1e-4  # same crop, z-score, resampling (measured 3e-6)
    # the source's own geometry is SimpleITK's (nnU-Net's) too
    img = sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
    assert props["original_shape"] == list(sitk.GetArrayViewFromImage(img).shape)
    assert props["original_spacing"] == pytest.approx(img.GetSpacing()[::-1], abs=1e-4)


# ---------------------------------------------------------------------------------- (b) checkpoints
@pytest.fixture(scope="module")
def mae3d_pretrained(axis_setup, tmp_path_factory) -> Path:
    """A real (tiny) mae3d pre-training run on the corpus prepared above."""
    from mae3d.pretraining.api import pretrain
    from mae3d.pretraining.config import PretrainConfig

    _, prepared, _ = axis_setup
    sets = {"data.corpus": str(prepared), "model.name": "resenc-xs", "method.name": "mae",
            "method.mask.block_size": "8", "loader.patch_size": "[32, 32, 32]", "loader.batch_size": "2",
            "loader.workers": "0", "loader.val_fraction": "0.3", "train.epochs": "1",
            "train.iterations_per_epoch": "1", "train.quiet": "true", "train.tensorboard": "false",
            "train.device": "cpu", "checkpoint.every": "1", "train.num_threads": "1"}
    cfg = apply_overrides(PretrainConfig(), [f"{k}={v}" for k, v in sets.items()])
    return Path(pretrain(cfg, tmp_path_factory.mktemp("pt") / "run"))


def _fixed(axis_setup, pre: PretrainedCheckpoint) -> dict:
    _, _, plans = axis_setup
    base = read_json(plans.preprocessed_dir / "nnUNetResEncUNetLPlans.json")
    fp = read_json(plans.preprocessed_dir / "dataset_fingerprint.json")
    return derive_fixed_plans(base, fp, pre, plans_name="x")


def test_mae3d_nnssl_and_roundtrip_checkpoints_give_one_plan_convention(axis_setup, mae3d_pretrained,
                                                                        tmp_path, openmind_folder):
    ck = load_checkpoint(mae3d_pretrained)
    corpus_plan = PreprocessedCorpus(axis_setup[1]).plan
    # the checkpoint records the corpus' convention: array-order spacing, patch, normalisation
    assert ck["pretrain"]["orientation"] == "as-stored" and ck["pretrain"]["normalization"] == "zscore"
    assert ck["pretrain"]["spacing"] == corpus_plan["target_spacing"] == [SPACING] * 3
    exported = export_nnssl(ck, tmp_path / "nnssl_export")
    nnssl_plan = read_json(exported / "adaptation_plan.json")["pretrain_plan"]
    assert nnssl_plan["transpose_forward"] == [0, 1, 2]
    assert nnssl_plan["configurations"]["onemmiso"]["spacing"] == [SPACING] * 3
    sources = {"mae3d": mae3d_pretrained, "exported": exported, "openmind": openmind_folder}
    convention = {}
    for name, path in sources.items():
        plans = _fixed(axis_setup, read_checkpoint(path))
        conf = plans["configurations"][CONFIGURATION]
        convention[name] = (plans["transpose_forward"], plans["transpose_backward"], conf["spacing"],
                            conf["patch_size"], conf["use_mask_for_norm"], conf["normalization_schemes"],
                            conf["data_identifier"])
    assert convention["mae3d"] == convention["exported"] == convention["openmind"], convention
    assert convention["mae3d"][:5] == ([0, 1, 2], [0, 1, 2], [SPACING] * 3, [32, 32, 32], [False])


def test_nonzero_pretraining_normalisation_carries_to_use_mask_for_norm(axis_setup, tiny_checkpoint,
                                                                         tmp_path):
    pre = read_checkpoint(tiny_checkpoint)
    ck = copy.deepcopy(pre.ckpt)
    ck["pretrain"]["normalization"] = "zscore-nonzero"
    nonzero = PretrainedCheckpoint(pre.path, pre.sha256, ck)
    assert _fixed(axis_setup, nonzero)["configurations"][CONFIGURATION]["use_mask_for_norm"] == [True]
    folder = export_nnssl(ck, tmp_path / "exp")
    assert read_json(folder / "adaptation_plan.json")["pretrain_plan"]["configurations"]["onemmiso"][
        "use_mask_for_norm"] == [True]
    ck["pretrain"]["normalization"] = "ct"
    with pytest.raises(PlanError, match="not a z-score"):
        _fixed(axis_setup, PretrainedCheckpoint(pre.path, pre.sha256, ck))


def test_nnssl_transpose_is_reproduced_in_the_plans(axis_setup, tiny_checkpoint):
    """An nnssl checkpoint pre-trained on transposed arrays: the plans transpose the same way and keep
    its spacing / patch as listed (they are already in that order)."""
    pre = read_checkpoint(tiny_checkpoint)
    ck = copy.deepcopy(pre.ckpt)
    ck["pretrain"].update(transpose_forward=[1, 0, 2], spacing=[6.0, 4.0, 4.0], patch_size=[16, 32, 48])
    plans = _fixed(axis_setup, PretrainedCheckpoint(pre.path, pre.sha256, ck))
    conf = plans["configurations"][CONFIGURATION]
    assert plans["transpose_forward"] == [1, 0, 2] and plans["transpose_backward"] == [1, 0, 2]
    assert conf["spacing"] == [6.0, 4.0, 4.0] and conf["patch_size"] == [16, 32, 48]


def test_legacy_ras_checkpoints(axis_setup, tiny_checkpoint, caplog):
    """Pre-trained on RAS-reoriented arrays: refused when its axis order matters, else a warning."""
    pre = read_checkpoint(tiny_checkpoint)
    ck = copy.deepcopy(pre.ckpt)
    ck["pretrain"]["orientation"] = "RAS"
    with caplog.at_level(logging.WARNING, logger="mae3d.finetuning.planning"):
        plans = _fixed(axis_setup, PretrainedCheckpoint(pre.path, pre.sha256, ck))
    assert plans["transpose_forward"] == [0, 1, 2] and "RAS-reoriented" in caplog.text
    ck["pretrain"]["spacing"] = [1.0, 1.0, 3.0]
    with pytest.raises(PlanError, match=r"RAS-reoriented arrays .*pre-train again"):
        _fixed(axis_setup, PretrainedCheckpoint(pre.path, pre.sha256, ck))
    assert torch.load(tiny_checkpoint, weights_only=True)["pretrain"]["orientation"] == "as-stored"
