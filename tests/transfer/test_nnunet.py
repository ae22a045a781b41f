"""nnU-Net files: full state-dict export (checked with nnU-Net's own ``load_pretrained_weights``) and
weights-only reading of nnU-Net training checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from mae3d.models import network_from_description
from mae3d.transfer.checkpoint import CheckpointError, UnsafeCheckpointError
from mae3d.transfer.nnunet import export_nnunet, load_training_checkpoint


def test_export_accepted_by_nnunet_loader(tmp_path, ckpt, xs_arch):
    path = export_nnunet(ckpt, tmp_path / "pretrained.pth")
    torch.manual_seed(3)
    net = network_from_description(xs_arch, 1, 3)  # same architecture, 3 segmentation classes
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
    net2 = network_from_description(xs_arch, 2, 3)
    with pytest.raises(AssertionError):  # nnU-Net cannot load a 1-channel stem into a 2-channel net
        load_pretrained_weights(net2, str(export_nnunet(ckpt, tmp_path / "one.pth")))
    path = export_nnunet(ckpt, tmp_path / "two.pth", input_channels=2)
    load_pretrained_weights(net2, str(path))
    w1 = ckpt["network_weights"]["encoder.stem.convs.0.conv.weight"]
    assert torch.allclose(net2.encoder.stem.convs[0].conv.weight, w1.repeat(1, 2, 1, 1, 1) / 2)
    assert torch.equal(net2.encoder.stages[1].blocks[0].conv1.conv.weight,
                       ckpt["network_weights"]["encoder.stages.1.blocks.0.conv1.conv.weight"])


def test_training_checkpoint_loads_weights_only_with_numpy_scalars(tmp_path):
    """nnU-Net logs np.float64 values; they load without allowing any code."""
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.5),
                "init_args": {"device": torch.device("cpu")}, "logging": {"x": [np.float32(1.0)]}}, path)
    ckpt = load_training_checkpoint(path)
    assert ckpt["_best_ema"] == 0.5 and torch.equal(ckpt["network_weights"]["w"], torch.ones(2))
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: not an nnU-Net training checkpoint"):
        load_training_checkpoint(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_training_checkpoint(tmp_path / "missing.pth")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_training_checkpoint_with_code_is_refused(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({"network_weights": {}, "_best_ema": np.float64(1.0), "x": _Evil(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused to load with weights_only=True"):
        load_training_checkpoint(path)
    assert not marker.exists()
