"""Plans-built networks, parameter groups and the linear probe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mae3d.finetuning import LinearProbeNet, build_from_plans, parameter_groups
from mae3d.transfer import UnsafeClassError


def _configuration(head: str = "unet") -> dict:
    from mae3d.models import describe

    d = describe("resenc-xs")
    return {"architecture": {k: d[k] for k in ("network_class_name", "arch_kwargs", "_kw_requires_import")},
            "mae3d_head": head}


def test_parameter_groups_split_the_resenc_unet():
    net = build_from_plans(_configuration(), 2, 3, deep_supervision=False)
    groups = parameter_groups(net)
    names = {g: [n for n, _ in items] for g, items in groups.items()}
    assert names["in_proj"] == ["encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.conv.bias"]
    assert all(n.startswith(("encoder.stem.", "encoder.stages.")) for n in names["encoder"])
    assert all(n.startswith("decoder.") for n in names["decoder"]) and not names["probe"]
    assert sum(len(v) for v in names.values()) == len(list(net.parameters()))
    assert net.encoder.stem.convs[0].conv.weight.shape[1] == 2  # dataset channels


def test_unsafe_class_in_plans_is_refused():
    conf = _configuration()
    conf["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    with pytest.raises(UnsafeClassError, match=r"os\.system"):
        build_from_plans(conf, 1, 2, deep_supervision=False)


def test_linear_probe_is_one_linear_map_of_the_hypercolumn():
    torch.manual_seed(0)
    net = build_from_plans(_configuration("linear_probe"), 1, 3, deep_supervision=False)
    assert isinstance(net, LinearProbeNet)
    assert [n for n, _ in parameter_groups(net)["probe"]][:2] == ["probe.0.weight", "probe.0.bias"]
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = net(x)
        # explicit hypercolumn: every stage upsampled to full size, concatenated, one 1x1x1 conv
        feats = [F.interpolate(f, size=x.shape[2:], mode="trilinear", align_corners=False)
                 for f in net.encoder(x)]
        weight = torch.cat([h.weight for h in net.probe], dim=1)
        ref = F.conv3d(torch.cat(feats, dim=1), weight, net.probe[0].bias)
    assert out.shape == (1, 3, 32, 32, 32)
    assert torch.allclose(out, ref, atol=1e-4)
