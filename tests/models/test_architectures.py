"""Architecture presets, builders, description round-trip and patch-size checks."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from mae3d.config import ConfigError, from_dict
from mae3d.models import (
    ARCHITECTURES,
    KEYS_TO_IN_PROJ,
    ArchitectureConfig,
    ArchitectureError,
    PatchSizeError,
    build_network,
    check_patch_size,
    count_parameters,
    describe,
    encoder_state_keys,
    network_from_description,
    stage_shapes,
    total_stride,
)

# what nnUNetPlannerResEncL writes into a plans file for a 1 mm brain dataset (6 stages, 3^3 kernels)
RESENC_L_PLANS_KWARGS = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
REQ_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")


def _shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_resenc_l_matches_nnunet_plans_network():
    with torch.device("meta"):  # shapes and keys only; no 400 MB of weights
        ours = build_network("resenc-l")
        theirs = get_network_from_plans(
            "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", RESENC_L_PLANS_KWARGS,
            REQ_IMPORT, 1, 1, allow_init=True, deep_supervision=False,
        )
    assert count_parameters(ours) == 102_348_965
    assert _shapes(ours) == _shapes(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert describe("resenc-l")["arch_kwargs"] == RESENC_L_PLANS_KWARGS
    prefixes = ("encoder.stem", "encoder.stages")
    enc = sum(p.numel() for k, p in ours.named_parameters() if k.startswith(prefixes))
    assert enc == 90_296_576


@pytest.mark.parametrize(("name", "params"), [("resenc-s", 14_240_308), ("resenc-xs", 1_293_884)])
def test_small_presets_parameter_counts(name, params):
    with torch.device("meta"):
        assert count_parameters(build_network(name)) == params


def test_registry_lists_presets_and_rejects_unknown():
    assert {"resenc-l", "resenc-s", "resenc-xs"} <= set(ARCHITECTURES.names())
    with pytest.raises(KeyError, match="resenc-l"):
        build_network("resenc-q")


def test_description_is_json_and_rebuilds_the_same_network():
    cfg = ArchitectureConfig(name="resenc-xs", features=[4, 8, 16, 16], blocks=[1, 1, 1, 1],
                             strides=[1, 2, 2, 2], kernel_sizes=[3, 3, 3, 3], decoder_convs=[1, 1, 1])
    desc = json.loads(json.dumps(describe(cfg, in_channels=2, out_channels=3)))
    assert desc["arch_class_name"] == "ResidualEncoderUNet"
    assert desc["_kw_requires_import"] == list(REQ_IMPORT)
    assert desc["keys_to_in_proj"] == list(KEYS_TO_IN_PROJ)
    torch.manual_seed(0)
    a = build_network(cfg, 2, 3)
    torch.manual_seed(0)
    b = network_from_description(desc)
    assert a.encoder.stem.convs[0].conv.in_channels == 2
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_description_class_allowlist():
    desc = describe("resenc-xs")
    desc["arch_kwargs"]["nonlin"] = "os.system"
    with pytest.raises(ValueError, match="not allowed"):
        network_from_description(desc)


def test_key_map_and_encoder_keys():
    net = build_network("resenc-xs")
    sd = net.state_dict()
    for key in KEYS_TO_IN_PROJ:
        assert key + ".weight" in sd
    keys = encoder_state_keys(net)
    assert keys and all(k.startswith(("encoder.stem.", "encoder.stages.")) for k in keys)
    assert not any(k.startswith("decoder.") for k in keys)
    assert "encoder.stem.convs.0.all_modules.0.weight" in keys


def test_overrides_and_validation():
    net = build_network(ArchitectureConfig(name="resenc-xs", features=[4, 8, 8, 8, 8]))
    assert net.encoder.output_channels == [4, 8, 8, 8, 8]
    with pytest.raises(ArchitectureError, match=r"blocks has 5 entries.*preset"):
        build_network(ArchitectureConfig(name="resenc-xs", features=[4, 8, 8]))
    with pytest.raises(ArchitectureError, match="odd"):
        build_network(ArchitectureConfig(name="resenc-xs", kernel_sizes=[3, 3, 2, 3, 3]))
    # the config dataclass is usable through mae3d.config (yaml/--set friendly)
    cfg = from_dict(ArchitectureConfig, {"name": "resenc-s", "strides": [[1, 1, 1], 2, 2, 2, 2]})
    assert total_stride(cfg) == (16, 16, 16)
    with pytest.raises(ConfigError):
        from_dict(ArchitectureConfig, {"name": "resenc-s", "width": 3})


def test_init_schemes():
    torch.manual_seed(0)
    default = build_network("resenc-xs")
    he = build_network(ArchitectureConfig(name="resenc-xs", init="he"))
    # nnU-Net's He init zeroes the last norm of every residual block and every conv bias
    assert torch.all(he.encoder.stages[1].blocks[0].conv2.norm.weight == 0)
    assert torch.all(he.encoder.stem.convs[0].conv.bias == 0)
    assert torch.all(default.encoder.stages[1].blocks[0].conv2.norm.weight == 1)
    assert default.encoder.stem.convs[0].conv.bias.abs().sum() > 0


def test_patch_geometry():
    assert total_stride("resenc-l") == (32, 32, 32)
    assert stage_shapes("resenc-l", 160)[-1] == (5, 5, 5)
    check_patch_size("resenc-l", 160, 16)
    check_patch_size("resenc-xs", (64, 64, 32), (16, 16, 8))
    with pytest.raises(PatchSizeError, match="not divisible by the total stride"):
        check_patch_size("resenc-l", 100)
    with pytest.raises(PatchSizeError, match="bottleneck"):
        check_patch_size("resenc-l", 32)
    with pytest.raises(PatchSizeError, match="does not divide"):
        check_patch_size("resenc-l", 160, 48)
