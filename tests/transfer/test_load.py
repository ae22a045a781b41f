"""Stem + encoder transfer into downstream networks, channel adaptation and the transfer report."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from mae3d.models import network_from_description
from mae3d.transfer.checkpoint import make_checkpoint, save_checkpoint
from mae3d.transfer.load import TransferError, build_pretrained_network, transfer_weights

STEM_W = ("encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight")


def _under(key: str, *prefixes: str) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def test_encoder_loaded_decoder_untouched(ckpt, xs_arch):
    torch.manual_seed(1)
    net = network_from_description(xs_arch, 1, 4)  # 4 segmentation classes downstream
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = transfer_weights(net, ckpt)
    after = net.state_dict()
    weights = ckpt["network_weights"]
    n_encoder = 0
    for k, v in after.items():
        if _under(k, "encoder.stem", "encoder.stages", "decoder.encoder"):
            assert torch.equal(v, weights[k]), k
            n_encoder += 1
        else:  # decoder stages, transposed convs, seg heads keep their fresh init
            assert torch.equal(v, before[k]), k
            if k in weights and weights[k].shape == v.shape:
                assert not torch.equal(v, weights[k]), k
    assert n_encoder > 50
    assert set(report.loaded) == {k for k in after if _under(k, "encoder.stem", "encoder.stages")}
    assert set(report.aliases) == {k for k in after if _under(k, "decoder.encoder")}
    assert set(report.fresh) == {k for k in after if not _under(k, "encoder.stem", "encoder.stages",
                                                                "decoder.encoder")}
    assert {"decoder.seg_layers.3.weight", "decoder.stages.0.convs.0.conv.weight"} <= set(report.skipped)
    assert not any(_under(k, "encoder") for k in report.skipped)
    assert report.adapted == {} and not report.input_channels_adapted
    json.dumps(report.to_dict())  # callers write it as JSON
    assert "tensors loaded" in report.format()


def test_channel_adaptation_repeats_and_divides(ckpt, xs_arch, pretrained_net):
    net3 = network_from_description(xs_arch, 3, 2)
    report = transfer_weights(net3, ckpt)
    sd = net3.state_dict()
    for k in STEM_W:
        w1 = ckpt["network_weights"][k]
        assert w1.shape[1] == 1 and sd[k].shape[1] == 3
        assert torch.allclose(sd[k], w1.repeat(1, 3, 1, 1, 1) / 3)
        assert report.adapted[k]["checkpoint_shape"] == list(w1.shape)
        assert report.adapted[k]["network_shape"] == list(sd[k].shape)
    bias = "encoder.stem.convs.0.conv.bias"
    assert torch.equal(sd[bias], ckpt["network_weights"][bias])
    assert report.input_channels_adapted

    # identical channels in -> exactly the pre-trained single-channel response at the stem (and beyond)
    x_b1dhw = torch.randn(1, 1, 32, 32, 32)
    net3.eval(), pretrained_net.eval()
    with torch.no_grad():
        stem3 = net3.encoder.stem(x_b1dhw.repeat(1, 3, 1, 1, 1))
        stem1 = pretrained_net.encoder.stem(x_b1dhw)
        assert torch.allclose(stem3, stem1, atol=1e-5)
        assert torch.allclose(net3.encoder(x_b1dhw.repeat(1, 3, 1, 1, 1))[-1],
                              pretrained_net.encoder(x_b1dhw)[-1], atol=1e-4)


def test_shape_mismatch_names_key_and_shapes(ckpt, xs_arch):
    bad = copy.deepcopy(ckpt)
    key = "encoder.stages.2.blocks.0.conv1.conv.weight"
    shape = tuple(bad["network_weights"][key].shape)
    bad["network_weights"][key] = torch.zeros(shape[0] + 1, *shape[1:])
    net = network_from_description(xs_arch, 1, 2)
    expected = f"{key}: shape mismatch: checkpoint {(shape[0] + 1, *shape[1:])} vs network {shape}"
    with pytest.raises(TransferError, match=re.escape(expected)):
        transfer_weights(net, bad)


def test_other_architecture_is_rejected(ckpt, xs_arch):
    other = copy.deepcopy(xs_arch)
    other["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64, 96]
    with pytest.raises(TransferError, match=r"needs in .encoder.stages., e.g. encoder\.stages\.4\."):
        transfer_weights(network_from_description(other, 1, 1), ckpt)


def test_more_checkpoint_channels_than_network(xs_arch, pretrain_meta):
    net2 = network_from_description(xs_arch, 2, 1)
    ckpt2 = make_checkpoint(net2.state_dict(), xs_arch, dict(pretrain_meta, in_channels=2))
    with pytest.raises(TransferError, match=r"checkpoint has 2 input channels but the network only 1"):
        transfer_weights(network_from_description(xs_arch, 1, 1), ckpt2)
    with pytest.raises(TransferError, match=r"only 1 -> C"):
        transfer_weights(network_from_description(xs_arch, 3, 1), ckpt2)


def test_transfer_from_file_and_whole_network(tmp_path, ckpt, xs_arch):
    path = save_checkpoint(tmp_path / "ckpt.pth", ckpt)
    net = network_from_description(xs_arch, 1, 1)
    report = transfer_weights(net, path, include=("all",))
    assert report.source == str(path) and report.fresh == []
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["network_weights"][k]), k
    with pytest.raises(ValueError, match="unknown part 'head'"):
        transfer_weights(net, ckpt, include=("head",))


def test_build_pretrained_network(ckpt):
    _, report = build_pretrained_network(ckpt)
    assert report.fresh == []
    net5, report5 = build_pretrained_network(ckpt, input_channels=2, num_classes=5)
    assert net5.decoder.seg_layers[-1].out_channels == 5 and report5.input_channels_adapted


def test_plain_conv_unet_channel_adaptation(pretrain_meta):
    """PlainConvUNet: stem lies inside the encoder; the 5-D repeat works (the fork's 4-D repeat did not)."""
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.Conv3d",
                            "kernel_sizes": 3, "strides": [1, 2, 2], "n_conv_per_stage": 2,
                            "n_conv_per_stage_decoder": 1, "conv_bias": True,
                            "norm_op": "torch.nn.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "nonlin"]}
    ck = make_checkpoint(network_from_description(arch, 1, 1).state_dict(), arch, pretrain_meta)
    assert ck["keys"]["stem"] == "encoder.stages.0"
    net = network_from_description(arch, 2, 3)
    report = transfer_weights(net, ck)
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.allclose(net.state_dict()[key], ck["network_weights"][key].repeat(1, 2, 1, 1, 1) / 2)
    assert key in report.adapted and all(k.startswith("encoder.stages.") for k in report.loaded)
