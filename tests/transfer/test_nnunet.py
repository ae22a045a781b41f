"""Full state-dict export, checked with nnU-Net's own ``load_pretrained_weights``."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from mae3d.transfer.architecture import build_network
from mae3d.transfer.nnunet import export_nnunet


def test_export_accepted_by_nnunet_loader(tmp_path, ckpt, xs_arch):
    path = export_nnunet(ckpt, tmp_path / "pretrained.pth")
    torch.manual_seed(3)
    net = build_network(xs_arch, 1, 3)  # same architecture, 3 segmentation classes
    heads_before = {k: v.clone() for k, v in net.state_dict().items() if ".seg_layers." in k}
    load_pretrained_weights(net, str(path))  # nnunetv2 asserts every non-head key matches
    weights = ckpt["network_weights"]
    for k, v in net.state_dict().items():
        if ".seg_layers." in k:
            assert torch.equal(v, heads_before[k]), k
        else:
            assert torch.equal(v, weights[k]), k
    raw = torch.load(path, weights_only=True)
    assert raw["mae3d"]["input_channels"] == 1 and "optimizer_state" not in raw
    with pytest.raises(FileExistsError):
        export_nnunet(ckpt, path)


def test_export_with_channel_adaptation(tmp_path, ckpt, xs_arch):
    net2 = build_network(xs_arch, 2, 3)
    with pytest.raises(AssertionError):  # nnU-Net cannot load a 1-channel stem into a 2-channel net
        load_pretrained_weights(net2, str(export_nnunet(ckpt, tmp_path / "one.pth")))
    path = export_nnunet(ckpt, tmp_path / "two.pth", input_channels=2)
    load_pretrained_weights(net2, str(path))
    w1 = ckpt["network_weights"]["encoder.stem.convs.0.conv.weight"]
    assert torch.allclose(net2.encoder.stem.convs[0].conv.weight, w1.repeat(1, 2, 1, 1, 1) / 2)
    assert torch.equal(net2.encoder.stages[1].blocks[0].conv1.conv.weight,
                       ckpt["network_weights"]["encoder.stages.1.blocks.0.conv1.conv.weight"])
