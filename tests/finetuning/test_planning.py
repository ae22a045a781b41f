"""Plans like the pre-training: spacing, z-score, patch, architecture, batch, provenance, conflicts."""

from __future__ import annotations

import copy

import pytest
import torch

from mae3d.finetuning import PlanError, check_patch_fits
from mae3d.finetuning.planning import CONFIGURATION, derive_dynamic_plans, derive_fixed_plans, prepare_plans
from mae3d.finetuning.pretrained import PretrainedCheckpoint, read_checkpoint
from mae3d.io.atomic import read_json


def test_fixed_plans_follow_the_checkpoint(prepared_fixed, tiny_checkpoint):
    _, prepared = prepared_fixed
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    conf = prepared.configuration
    assert prepared.plans_name.startswith("mae3dPlans_tiny-mae-") and prepared.plans_name.endswith("_warmup")
    assert list(prepared.plans["configurations"]) == [CONFIGURATION]
    assert conf["spacing"] == [4.0, 4.0, 4.0]
    assert conf["normalization_schemes"] == ["ZScoreNormalization"]
    assert conf["use_mask_for_norm"] == [False]  # the checkpoint's whole-box z-score
    assert prepared.plans["transpose_forward"] == [0, 1, 2]
    assert conf["patch_size"] == [32, 32, 32]
    assert conf["batch_size"] == 2
    assert conf["architecture"]["arch_kwargs"] == ckpt["architecture"]["arch_kwargs"]
    assert conf["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    assert conf["data_identifier"].startswith("mae3d_Spacing_4x4x4_Norm_ZScore_")
    pre = prepared.plans["mae3d_pretrain"]
    assert pre["method"] == "mae" and len(pre["sha256"]) == 64 and pre["weights_loaded"] is True
    assert pre["keys"]["encoder"] == "encoder.stages"
    # the plans file on disk is what the trainer gets; the data was preprocessed with it
    assert read_json(prepared.preprocessed_dir / f"{prepared.plans_name}.json") == prepared.plans
    assert sorted(p.name for p in prepared.data_dir.glob("*.b2nd") if "_seg" not in p.name) == \
        ["mni2009c_t1.b2nd", "mni2009c_t2.b2nd"]
    assert (prepared.preprocessed_dir / "gt_segmentations" / "mni2009c_t1.nii.gz").is_file()


def test_preparing_again_reuses_the_data(prepared_fixed, brain_dataset, tiny_checkpoint, fast_cfg):
    _, prepared = prepared_fixed
    before = {p.name: p.stat().st_mtime_ns for p in prepared.data_dir.iterdir()}
    again = prepare_plans(brain_dataset, prepared.preprocessed_dir.parent, fast_cfg(patch_size=None),
                          read_checkpoint(tiny_checkpoint))
    assert again.plans == prepared.plans
    assert {p.name: p.stat().st_mtime_ns for p in prepared.data_dir.iterdir()} == before


def test_conflicting_plans_are_refused(prepared_fixed, brain_dataset, tiny_checkpoint, fast_cfg):
    _, prepared = prepared_fixed
    with pytest.raises(PlanError, match="exists with different content"):
        prepare_plans(brain_dataset, prepared.preprocessed_dir.parent,
                      fast_cfg(patch_size=None, batch_size=3), read_checkpoint(tiny_checkpoint))


def _base_and_fingerprint(prepared):
    base = read_json(prepared.preprocessed_dir / "nnUNetResEncUNetLPlans.json")
    return base, read_json(prepared.preprocessed_dir / "dataset_fingerprint.json")


def test_patch_that_the_architecture_cannot_host(prepared_fixed, tiny_checkpoint):
    _, prepared = prepared_fixed
    base, fp = _base_and_fingerprint(prepared)
    pre = read_checkpoint(tiny_checkpoint)  # resenc-xs: total stride 16
    with pytest.raises(PlanError, match=r"cannot host patch \[40, 32, 32\].*multiple of the stride") as e:
        derive_fixed_plans(base, fp, pre, plans_name="x", patch_size=(40, 32, 32))
    assert "\n" not in str(e.value)
    with pytest.raises(PlanError, match=r"too small.*bottleneck would be \[1, 1, 1\]"):
        derive_fixed_plans(base, fp, pre, plans_name="x", patch_size=(16, 16, 16))
    # the checkpoint's own recommendation is checked as well
    ck = copy.deepcopy(pre.ckpt)
    ck["pretrain"]["recommended_downstream_patch_size"] = [24, 24, 24]
    with pytest.raises(PlanError, match="cannot host patch \\[24, 24, 24\\]"):
        derive_fixed_plans(base, fp, PretrainedCheckpoint(pre.path, pre.sha256, ck), plans_name="x")


def test_anisotropic_pretraining_spacing_is_taken_in_array_order(prepared_fixed, tiny_checkpoint):
    """Checkpoint spacing / patch are in the pre-training arrays' order = nnU-Net's reader order; the
    plans keep them as they are and the identity transpose, whatever the planner chose."""
    _, prepared = prepared_fixed
    base, fp = _base_and_fingerprint(prepared)
    pre = read_checkpoint(tiny_checkpoint)
    ck = copy.deepcopy(pre.ckpt)
    ck["pretrain"]["spacing"] = [1.0, 2.0, 3.0]  # array axes 0, 1, 2
    ck["pretrain"]["patch_size"] = [32, 48, 64]
    base = {**base, "transpose_forward": [0, 2, 1], "transpose_backward": [0, 2, 1],
            "original_median_spacing_after_transp": [4.0, 6.0, 5.0]}
    plans = derive_fixed_plans(base, fp, PretrainedCheckpoint(pre.path, pre.sha256, ck), plans_name="x",
                               batch_size=5, from_scratch=True)
    conf = plans["configurations"][CONFIGURATION]
    assert conf["spacing"] == [1.0, 2.0, 3.0] and conf["patch_size"] == [32, 48, 64]
    assert plans["transpose_forward"] == plans["transpose_backward"] == [0, 1, 2]
    assert plans["original_median_spacing_after_transp"] == [4.0, 5.0, 6.0]  # back in reader order
    assert conf["batch_size"] == 5 and plans["mae3d_pretrain"]["weights_loaded"] is False
    assert plans["mae3d_pretrain"]["spacing"] == [1.0, 2.0, 3.0]


def test_dynamic_plans_keep_nnunets_configuration(prepared_fixed):
    _, prepared = prepared_fixed
    base, _ = _base_and_fingerprint(prepared)
    plans = derive_dynamic_plans(base, plans_name="nnUNetResEncLPlans_poly")
    assert plans["configurations"][CONFIGURATION]["architecture"] == base["configurations"][CONFIGURATION][
        "architecture"]
    assert plans["configurations"][CONFIGURATION]["data_identifier"] == "nnUNetPlans_3d_fullres"
    with pytest.raises(PlanError, match="cannot host"):
        derive_dynamic_plans(base, plans_name="y", patch_size=(36, 32, 32))


def test_check_patch_fits_unit():
    arch = {"arch_kwargs": {"n_stages": 3, "strides": [1, [2, 2, 1], 2]}}
    check_patch_fits(arch, (8, 8, 4))
    with pytest.raises(PlanError, match="multiple"):
        check_patch_fits(arch, (8, 8, 3))
    with pytest.raises(PlanError, match="too small"):
        check_patch_fits(arch, (4, 4, 2))


def test_nnunet_normalization_option_keeps_the_planners_schemes(prepared_fixed, tiny_checkpoint):
    _, prepared = prepared_fixed
    base, fp = _base_and_fingerprint(prepared)
    base = copy.deepcopy(base)
    conf = base["configurations"][CONFIGURATION]
    conf["normalization_schemes"], conf["use_mask_for_norm"] = ["CTNormalization"], [False]  # a CT channel
    pre = read_checkpoint(tiny_checkpoint)
    z = derive_fixed_plans(base, fp, pre, plans_name="z")["configurations"][CONFIGURATION]
    ct = derive_fixed_plans(base, fp, pre, plans_name="ct", normalization="nnunet")
    ct = ct["configurations"][CONFIGURATION]
    assert z["normalization_schemes"] == ["ZScoreNormalization"]
    assert ct["normalization_schemes"] == ["CTNormalization"]
    assert "_Norm_CT_" in ct["data_identifier"] and ct["data_identifier"] != z["data_identifier"]
