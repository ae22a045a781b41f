"""The one class allowlist and architecture descriptions (validate, compare, build)."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from mae3d.models import (
    ArchitectureError,
    UnsafeClassError,
    canonical_architecture,
    describe,
    network_from_description,
    resolve_class,
    same_architecture,
)


@pytest.fixture()
def xs_arch():
    return canonical_architecture(describe("resenc-xs"))


@pytest.mark.parametrize(("name", "cls"), [
    ("torch.nn.modules.conv.Conv3d", nn.Conv3d),
    ("torch.nn.Conv3d", nn.Conv3d),
    ("torch.nn.InstanceNorm3d", nn.InstanceNorm3d),
    ("torch.nn.modules.instancenorm.InstanceNorm3d", nn.InstanceNorm3d),
    ("torch.nn.LeakyReLU", nn.LeakyReLU),
    ("torch.nn.modules.dropout.Dropout3d", nn.Dropout3d),
    ("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", ResidualEncoderUNet),
    ("ResidualEncoderUNet", ResidualEncoderUNet),
    ("dynamic_network_architectures.architectures.unet.PlainConvUNet", PlainConvUNet),
])
def test_allowed_names_resolve(name, cls):
    assert resolve_class(name) is cls


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "torch.load",
                                  "torch.nn.NotAClass", "nn.Conv3d", "Conv3d", "", "antigravity.fly"])
def test_other_names_are_rejected_without_import(name):
    sys.modules.pop("antigravity", None)
    with pytest.raises(UnsafeClassError, match="not on mae3d's allowlist"):
        resolve_class(name, source="plans.json")
    assert "antigravity" not in sys.modules  # nothing was imported to answer


def test_unsafe_class_in_arch_kwargs_is_rejected(xs_arch):
    bad = copy.deepcopy(xs_arch)
    bad["arch_kwargs"]["nonlin"] = "os.system"
    with pytest.raises(UnsafeClassError, match=r"'os\.system'"):
        network_from_description(bad, 1, 1)


def test_non_network_class_is_rejected(xs_arch):
    bad = copy.deepcopy(xs_arch)
    bad["network_class_name"] = "torch.nn.Conv3d"
    with pytest.raises(ArchitectureError, match="not a network class"):
        canonical_architecture(bad)


def test_malformed_architecture(xs_arch):
    with pytest.raises(ArchitectureError, match="arch_kwargs"):
        canonical_architecture({"network_class_name": "ResidualEncoderUNet"})
    bad = copy.deepcopy(xs_arch)
    bad["arch_kwargs"]["num_classes"] = 3
    with pytest.raises(ArchitectureError, match="run-time"):
        canonical_architecture(bad)


def test_same_architecture_ignores_spelling_and_shorthands():
    a = describe("resenc-l")  # models' spelling, with extra keys
    b = canonical_architecture(a)
    b["arch_kwargs"]["nonlin"] = "torch.nn.modules.activation.LeakyReLU"
    b["arch_kwargs"]["kernel_sizes"] = 3  # scalar shorthand
    b["arch_kwargs"]["strides"] = [1, 2, 2, 2, 2, 2]
    del b["arch_kwargs"]["dropout_op_kwargs"]  # default None
    assert same_architecture(a, b)
    c = copy.deepcopy(b)
    c["arch_kwargs"]["features_per_stage"] = [32, 64, 128, 256, 320, 384]
    assert not same_architecture(a, c)
    assert not same_architecture(a, describe("resenc-xs"))


def test_bare_nnssl_class_name_becomes_dotted(xs_arch):
    bare = dict(xs_arch, network_class_name="ResidualEncoderUNet")
    assert canonical_architecture(bare)["network_class_name"] == \
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def test_builder_errors_name_the_source(xs_arch):
    bad = copy.deepcopy(xs_arch)
    bad["arch_kwargs"]["n_stages"] = 4  # lists still have 5 entries
    with pytest.raises(ArchitectureError, match=r"^plans\.json: cannot build .*ResidualEncoderUNet"):
        network_from_description(bad, 1, 2, source="plans.json")


def test_one_builder_for_plans_and_presets(xs_arch):
    """A plans-style PlainConvUNet builds too, and description defaults / overrides apply."""
    plain = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
             "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.Conv3d",
                             "kernel_sizes": 3, "strides": [1, 2], "n_conv_per_stage": 1,
                             "n_conv_per_stage_decoder": 1, "conv_bias": True,
                             "norm_op": "torch.nn.InstanceNorm3d", "nonlin": "torch.nn.LeakyReLU"},
             "_kw_requires_import": ["conv_op", "norm_op", "nonlin"]}
    net = network_from_description(plain, 2, 3)
    assert net.encoder.stages[0][0].convs[0].conv.in_channels == 2
    assert net.decoder.seg_layers[-1].out_channels == 3
    desc = describe("resenc-xs", in_channels=3, out_channels=4)
    del desc["_kw_requires_import"]  # optional: the class-valued kwargs are known
    he = network_from_description(desc, init="he")
    assert he.encoder.stem.convs[0].conv.in_channels == 3 and he.decoder.seg_layers[-1].out_channels == 4
    assert torch.all(he.encoder.stem.convs[0].conv.bias == 0)  # nnU-Net's He init zeroes conv biases
