"""Dense MAE, the methods registry and the reconstruction loss."""

from __future__ import annotations

import pytest
import torch

from mae3d.config import ConfigError
from mae3d.models import build_network
from mae3d.pretraining.masking import MaskError, sample_block_mask, upsample_mask
from mae3d.pretraining.methods import METHODS, MAEConfig, build_method, reconstruction_loss


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_bcdhw = torch.randn(2, 1, 32, 32, 32, generator=gen)
    mask_b1ghw = sample_block_mask(2, 32, 8, 0.75, gen)
    return x_bcdhw, mask_b1ghw


def test_registry_and_config_validation():
    assert {"mae", "s3d"} <= set(METHODS.names())
    net = build_network("resenc-xs")
    assert build_method("mae", net, {"loss": "all"}).cfg == MAEConfig(loss="all")
    with pytest.raises(ConfigError, match="sparse_conv"):
        build_method("mae", net, {"sparse_conv": False})
    with pytest.raises(KeyError, match="mae, s3d"):
        build_method("simclr", net)


def test_mae_feeds_zero_filled_input_and_keeps_plain_keys():
    torch.manual_seed(0)
    net = build_network("resenc-xs")
    plain_keys = list(net.state_dict())
    mae = build_method("mae", net)
    seen = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    x_bcdhw, mask_b1ghw = _batch()
    out = mae(x_bcdhw, mask_b1ghw)
    visible = upsample_mask(mask_b1ghw, x_bcdhw.shape[2:], torch.float32)
    assert torch.equal(seen[0], x_bcdhw * visible)
    assert out.reconstruction_bcdhw.shape == x_bcdhw.shape and torch.isfinite(out.loss)
    assert list(mae.network.state_dict()) == plain_keys
    assert sum(p.numel() for p in mae.parameters()) == 1_293_884


def test_bad_batches_raise_clear_errors():
    mae = build_method("mae", build_network("resenc-xs"))
    x_bcdhw, mask_b1ghw = _batch()
    with pytest.raises(MaskError, match="batch"):
        mae(x_bcdhw[:1], mask_b1ghw)
    with pytest.raises(MaskError, match="bool"):
        mae(x_bcdhw, mask_b1ghw.float())
    with pytest.raises(MaskError, match="does not divide"):
        mae(x_bcdhw[..., :30], mask_b1ghw)


def test_masked_loss_ignores_visible_voxels():
    x_bcdhw, mask_b1ghw = _batch()
    visible = upsample_mask(mask_b1ghw, x_bcdhw.shape[2:], torch.float32)
    pred = torch.randn_like(x_bcdhw, requires_grad=True)
    loss = reconstruction_loss(pred, x_bcdhw, visible, "masked")
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.all(grad[visible.expand_as(grad).bool()] == 0)
    assert torch.all(grad[~visible.expand_as(grad).bool()] != 0)
    # changing the prediction at visible voxels leaves the loss unchanged; at masked voxels it does not
    other = pred.detach() + 5.0 * visible
    assert torch.equal(reconstruction_loss(other, x_bcdhw, visible), loss.detach())
    hidden = 1.0 - visible
    expected = ((pred.detach() - x_bcdhw) ** 2 * hidden).sum() / hidden.sum()
    torch.testing.assert_close(loss.detach(), expected)
    loss_all = reconstruction_loss(other, x_bcdhw, visible, "all")
    assert loss_all > reconstruction_loss(pred.detach(), x_bcdhw, visible, "all")
    assert reconstruction_loss(pred, x_bcdhw, torch.ones_like(visible)) == 0  # nothing masked


def test_mae_loss_all_option_changes_the_objective():
    torch.manual_seed(0)
    net = build_network("resenc-xs")
    x_bcdhw, mask_b1ghw = _batch()
    masked = build_method("mae", net)(x_bcdhw, mask_b1ghw)
    full = build_method("mae", net, {"loss": "all"})(x_bcdhw, mask_b1ghw)
    assert torch.equal(masked.reconstruction_bcdhw, full.reconstruction_bcdhw)
    assert not torch.isclose(masked.loss, full.loss)


def _defaced_b1dhw() -> torch.Tensor:
    """A synthetic defacing mask: the 'face' slab x >= 24 (and a stray block) is defaced (non-zero)."""
    d = torch.zeros(2, 1, 32, 32, 32, dtype=torch.uint8)
    d[:, :, 24:] = 1
    d[1, :, :8, :8, :8] = 1
    return d


@pytest.mark.parametrize("name", ["mae", "s3d"])
def test_defaced_voxels_are_zero_in_the_input_and_out_of_the_loss(name):
    torch.manual_seed(0)
    net = build_network("resenc-xs")
    method = build_method(name, net)
    seen = []
    if name == "mae":
        net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    else:  # S3D walks the encoder itself: record what it encodes
        encode = method.encode

        def recording_encode(x_in, masks, probe=None):
            seen.append(x_in.detach().clone())
            return encode(x_in, masks, probe)

        method.encode = recording_encode
    x_bcdhw, mask_b1ghw = _batch()
    defaced = _defaced_b1dhw()
    out = method(x_bcdhw, mask_b1ghw, defaced)
    bad = defaced.bool()
    assert torch.all(seen[-1][bad] == 0)  # the network never sees defaced intensities
    # the loss is the MSE over the masked voxels that are not defaced
    visible = upsample_mask(mask_b1ghw, x_bcdhw.shape[2:]).bool()
    use = ~visible & ~bad
    pred = out.reconstruction_bcdhw.detach()
    expect = (pred - x_bcdhw)[use].square().mean()
    torch.testing.assert_close(out.loss, expect, rtol=1e-5, atol=1e-7)
    # defaced voxels get zero gradient w.r.t. the prediction; the other masked voxels all get some
    (grad,) = torch.autograd.grad(out.loss, out.reconstruction_bcdhw)
    assert torch.all(grad[bad] == 0) and torch.all(grad[visible] == 0)
    assert torch.count_nonzero(grad[use]) == int(use.sum())
    # defaced intensities do not matter at all (input zeroed, loss ignores them)
    changed = x_bcdhw + 5.0 * bad.float()
    again = method(changed, mask_b1ghw, defaced)
    assert torch.equal(again.reconstruction_bcdhw, out.reconstruction_bcdhw)
    assert torch.equal(again.loss, out.loss)
    # without the defacing mask: the ordinary masked loss (differs)
    assert not torch.isclose(method(x_bcdhw, mask_b1ghw).loss, out.loss)
    with pytest.raises(MaskError, match="defaced mask must have shape"):
        method(x_bcdhw, mask_b1ghw, defaced[:, :, :16])


def test_reconstruction_loss_with_keep_mask_all_voxels():
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 1, 4, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, 4, generator=gen)
    visible = torch.ones(2, 1, 4, 4, 4)
    keep = torch.ones(2, 1, 4, 4, 4)
    keep[0, :, :2] = 0
    loss = reconstruction_loss(pred, target, visible, "all", keep)
    torch.testing.assert_close(loss, (pred - target)[keep.bool()].square().mean())
