"""nnssl / OpenMind format: export, import of nnssl-written checkpoints, exact round trip."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mae3d.models import UnsafeClassError, describe
from mae3d.transfer.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, strip_training_state
from mae3d.transfer.load import build_pretrained_network, read_pretrained
from mae3d.transfer.nnssl import (
    adaptation_plan,
    export_nnssl,
    import_nnssl,
    is_resenc_l,
    nnssl_to_mae3d,
    resenc_l_architecture,
)


def _assert_same_checkpoint(a, b):
    assert set(a) == set(b)
    for key in a:
        if key == "network_weights":
            assert list(a[key]) == list(b[key])
            for k in a[key]:
                assert torch.equal(a[key][k], b[key][k]), k
        else:
            assert a[key] == b[key], key


def test_round_trip_mae3d_nnssl_mae3d(tmp_path, ckpt):
    folder = export_nnssl(ckpt, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["adaptation_plan.json", "checkpoint_final.pth"]
    back = import_nnssl(folder)
    _assert_same_checkpoint(back, strip_training_state(ckpt))
    assert read_pretrained(folder / "checkpoint_final.pth")["pretrain"] == ckpt["pretrain"]
    with pytest.raises(FileExistsError):
        export_nnssl(ckpt, tmp_path / "model")


def test_exported_files_follow_nnssl_layout(tmp_path, ckpt):
    folder = export_nnssl(ckpt, tmp_path / "model")
    plan = json.loads((folder / "adaptation_plan.json").read_text())
    raw = torch.load(folder / "checkpoint_final.pth", weights_only=True)  # as the fine-tuning fork loads it
    assert raw["nnssl_adaptation_plan"] == plan
    assert raw["trainer_name"] == "mae3d_s3d"
    assert not {"optimizer_state", "rng_state", "epoch"} & set(raw)
    arch = plan["architecture_plans"]
    assert arch["arch_class_name"] == "ResidualEncoderUNet"  # resenc-xs is not the ResEncL preset
    assert arch["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64, 64]
    assert set(arch["arch_kwargs_requiring_import"]) == {"conv_op", "norm_op", "dropout_op", "nonlin"}
    config = next(iter(plan["pretrain_plan"]["configurations"].values()))
    assert config["spacing"] == [1.0, 1.0, 1.0] and config["patch_size"] == [32, 32, 32]
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    assert config["use_mask_for_norm"] == [False]  # "zscore": the whole cropped box, as nnssl
    # mae3d pre-trains on SimpleITK's array order untransposed: identity, spacing listed in that order
    pretrain_plan = plan["pretrain_plan"]
    assert pretrain_plan["transpose_forward"] == pretrain_plan["transpose_backward"] == [0, 1, 2]
    assert plan["pretrain_plan"]["image_reader_writer"] == "SimpleITKIO"
    assert plan["pretrain_num_input_channels"] == 1
    assert plan["recommended_downstream_patchsize"] == [32, 32, 32]
    assert plan["key_to_encoder"] == "encoder.stages" and plan["key_to_stem"] == "encoder.stem"
    assert plan["keys_to_in_proj"] == ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    assert plan["key_to_lpe"] is None
    # mae3d's own loader points at the right importer
    with pytest.raises(CheckpointError, match="import_nnssl"):
        load_checkpoint(folder / "checkpoint_final.pth")


def _stem_only_weights(channels: int = 32) -> dict[str, torch.Tensor]:
    w = torch.randn(channels, 1, 3, 3, 3)
    return {"encoder.stem.convs.0.conv.weight": w, "encoder.stem.convs.0.all_modules.0.weight": w,
            "encoder.stages.0.blocks.0.conv1.conv.weight": torch.randn(32, 32, 3, 3, 3)}


def test_resenc_l_preset_is_recognised_in_any_spelling():
    b = copy.deepcopy(resenc_l_architecture())
    b["arch_kwargs"]["kernel_sizes"] = 3  # scalar shorthand
    b["arch_kwargs"]["nonlin"] = "torch.nn.modules.activation.LeakyReLU"
    assert is_resenc_l(b) and is_resenc_l(describe("resenc-l"))
    assert not is_resenc_l(describe("resenc-xs"))


def test_resenc_l_is_exported_as_preset(pretrain_meta):
    ck = make_checkpoint(_stem_only_weights(), describe("resenc-l"), pretrain_meta)
    arch = adaptation_plan(ck)["architecture_plans"]
    assert arch == {"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": None}


def _nnssl_plan(arch_plans):
    """An adaptation plan as nnssl's BaseMAETrainer writes it (fields of nnssl.md §6.1)."""
    return {
        "architecture_plans": arch_plans,
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                          "configurations": {"onemmiso": {
                              "patch_size": [160, 160, 160], "spacing": [1.0, 1.0, 1.0],
                              "normalization_schemes": ["ZScoreNormalization"], "batch_size": 8}}},
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
    }


def test_import_nnssl_checkpoint_with_sibling_plan(tmp_path, pretrained_net, xs_arch):
    kwargs = copy.deepcopy(xs_arch["arch_kwargs"])
    plan = _nnssl_plan({"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": kwargs,
                        "arch_kwargs_requiring_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]})
    folder = tmp_path / "hf_model"
    folder.mkdir()
    # written the way nnssl's trainer does (resume state included), plan only as adaptation_plan.json
    torch.save({"network_weights": pretrained_net.state_dict(), "optimizer_state": {"state": {}},
                "current_epoch": 1000, "trainer_name": "BaseMAETrainer_BS8"}, folder / "checkpoint_final.pth")
    (folder / "adaptation_plan.json").write_text(json.dumps(plan))
    ck = import_nnssl(folder)
    assert ck["architecture"]["network_class_name"] == \
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    assert ck["pretrain"] == {"method": "nnssl:BaseMAETrainer_BS8", "spacing": [1.0, 1.0, 1.0],
                              "patch_size": [160, 160, 160], "normalization": "zscore",
                              "orientation": "as-stored",
                              "in_channels": 1, "num_output_channels": 1,
                              "recommended_downstream_patch_size": [160, 160, 160]}
    assert "optimizer_state" not in ck and ck["provenance"]["source_format"] == "nnssl"
    net, _ = build_pretrained_network(ck)  # the imported architecture builds and loads strictly
    expected = pretrained_net.state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_import_resencl_preset(tmp_path):
    plan = _nnssl_plan({"arch_class_name": "ResEncL", "arch_kwargs": None,
                        "arch_kwargs_requiring_import": None})
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": _stem_only_weights(), "nnssl_adaptation_plan": plan}, path)
    ck = import_nnssl(path)
    assert is_resenc_l(ck["architecture"]) and ck["architecture"] == resenc_l_architecture()
    assert ck["keys"]["stem"] == "encoder.stem"


@pytest.mark.parametrize(("arch_plans", "error", "message"), [
    ({"arch_class_name": "PrimusM", "arch_kwargs": None}, CheckpointError, "not supported"),
    ({"arch_class_name": "evil.module.Net", "arch_kwargs": {}}, UnsafeClassError, "allowlist"),
])
def test_unsupported_architectures(tmp_path, arch_plans, error, message):
    path = tmp_path / "checkpoint_final.pth"
    plan = _nnssl_plan(arch_plans)
    torch.save({"network_weights": _stem_only_weights(), "nnssl_adaptation_plan": plan}, path)
    with pytest.raises(error, match=message):
        import_nnssl(path)


def test_checkpoint_without_plan(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": _stem_only_weights()}, path)
    with pytest.raises(CheckpointError, match="no adaptation plan"):
        import_nnssl(path)


def test_anisotropic_export_and_import_keep_axis_order_and_normalisation(pretrained_net, xs_arch,
                                                                         pretrain_meta):
    """Spacing / patch in array order and the z-score variant survive mae3d -> nnssl plan -> mae3d."""
    meta = {**pretrain_meta, "spacing": [3.0, 1.0, 1.5], "patch_size": [16, 32, 48],
            "normalization": "zscore-nonzero"}
    ck = make_checkpoint(pretrained_net.state_dict(), xs_arch, meta)
    plan = adaptation_plan(ck)
    config = plan["pretrain_plan"]["configurations"]["onemmiso"]
    assert config["spacing"] == [3.0, 1.0, 1.5] and config["patch_size"] == [16, 32, 48]
    assert config["use_mask_for_norm"] == [True]
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    # read back from the plan alone (as for a checkpoint nnssl wrote: no mae3d metadata)
    back = nnssl_to_mae3d({"network_weights": pretrained_net.state_dict()}, plan=plan)
    assert back["pretrain"]["spacing"] == [3.0, 1.0, 1.5] and back["pretrain"]["patch_size"] == [16, 32, 48]
    assert back["pretrain"]["normalization"] == "zscore-nonzero"
    assert "transpose_forward" not in back["pretrain"]


def test_import_records_a_transposing_nnssl_plan(pretrained_net, xs_arch):
    """nnssl plans list spacing after their transpose_forward; the import keeps both, as they are."""
    plan = _nnssl_plan({"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": xs_arch["arch_kwargs"],
                        "arch_kwargs_requiring_import": xs_arch["_kw_requires_import"]})
    plan["pretrain_plan"]["transpose_forward"] = [2, 0, 1]
    plan["pretrain_plan"]["transpose_backward"] = [1, 2, 0]
    plan["pretrain_plan"]["configurations"]["onemmiso"]["spacing"] = [3.0, 1.0, 1.0]
    ck = nnssl_to_mae3d({"network_weights": pretrained_net.state_dict()}, plan=plan)
    assert ck["pretrain"]["transpose_forward"] == [2, 0, 1] and ck["pretrain"]["spacing"] == [3.0, 1.0, 1.0]
    plan["pretrain_plan"]["transpose_forward"] = [0, 0, 1]
    with pytest.raises(CheckpointError, match="not a permutation"):
        nnssl_to_mae3d({"network_weights": pretrained_net.state_dict()}, plan=plan)
