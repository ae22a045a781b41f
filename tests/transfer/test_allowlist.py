"""Allowlisted class resolution and architecture descriptions."""

from __future__ import annotations

import copy
import sys

import pytest
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from mae3d.models import describe
from mae3d.transfer.allowlist import UnsafeClassError, resolve_class
from mae3d.transfer.architecture import (
    ArchitectureError,
    build_network,
    canonical_architecture,
    is_resenc_l,
    resenc_l_architecture,
    same_architecture,
)


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
        build_network(bad, 1, 1)


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
    b = copy.deepcopy(resenc_l_architecture())
    b["arch_kwargs"]["nonlin"] = "torch.nn.modules.activation.LeakyReLU"
    b["arch_kwargs"]["kernel_sizes"] = 3  # scalar shorthand
    b["arch_kwargs"]["strides"] = [1, 2, 2, 2, 2, 2]
    del b["arch_kwargs"]["dropout_op_kwargs"]  # default None
    assert same_architecture(a, b)
    assert is_resenc_l(b)
    c = copy.deepcopy(b)
    c["arch_kwargs"]["features_per_stage"] = [32, 64, 128, 256, 320, 384]
    assert not same_architecture(a, c)
    assert not is_resenc_l(describe("resenc-xs"))


def test_resenc_l_preset_matches_paper_parameter_count():
    net = build_network(resenc_l_architecture(), 1, 1)
    assert sum(p.numel() for p in net.parameters()) == 102_348_965  # nnssl.md §1.1: ≈102.35 M
