"""Fixtures for transfer tests: a tiny ResEnc (``resenc-xs``) network and a mae3d checkpoint of it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mae3d.models import canonical_architecture, describe, network_from_description
from mae3d.transfer.checkpoint import capture_rng_state, make_checkpoint

PRETRAIN = {
    "method": "s3d",
    "spacing": [1.0, 1.0, 1.0],
    "patch_size": [32, 32, 32],
    "normalization": "zscore",
    "orientation": "as-stored",
    "in_channels": 1,
    "num_output_channels": 1,
}


@pytest.fixture()
def pretrain_meta() -> dict[str, Any]:
    """The ``pretrain`` block of the test checkpoints (a fresh copy)."""
    return dict(PRETRAIN)


@pytest.fixture()
def xs_arch() -> dict[str, Any]:
    """Architecture dict of the models package's tiny ``resenc-xs`` preset."""
    return canonical_architecture(describe("resenc-xs"))


@pytest.fixture()
def pretrained_net(xs_arch) -> torch.nn.Module:
    """A 1-in / 1-out resenc-xs whose weights stand in for pre-trained ones (seeded random init)."""
    torch.manual_seed(0)
    net = network_from_description(xs_arch, 1, 1)
    with torch.no_grad():  # make norm affine params non-trivial so they are distinguishable from init
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.fixture()
def ckpt(pretrained_net, xs_arch) -> dict[str, Any]:
    """A full mae3d checkpoint of ``pretrained_net`` including resume-only training state."""
    opt = torch.optim.SGD(pretrained_net.parameters(), lr=1e-2, momentum=0.99)
    return make_checkpoint(
        pretrained_net.state_dict(), xs_arch, PRETRAIN,
        config={"method": {"name": "s3d", "mask_ratio": 0.6}, "patch_size": [32, 32, 32]},
        provenance={"git_commit": "abc", "command": ["mae3d", "pretrain"]},
        optimizer_state=opt.state_dict(), epoch=7, rng_state=capture_rng_state(), loader_seed=1234,
    )
