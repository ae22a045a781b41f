"""Spark-3D: sparse-conv emulation invariants, masked InstanceNorm, mask tokens, switches, keys."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import _AvgPoolNd

from mae3d.models import ArchitectureConfig, build_network, count_parameters
from mae3d.pretraining.masking import sample_block_mask, upsample_mask
from mae3d.pretraining.methods import S3D, S3DConfig, build_method
from mae3d.pretraining.sparse import MaskPyramid, masked_instance_norm, sparse_encoder_forward

PATCH = 32  # resenc-xs stages: 32, 16, 8, 4, 2; 8^3 blocks -> 4^3 grid: stages 0-3 masked, 4 dense
OFF = {"sparse_conv": False, "sparse_norm": False, "mask_token": False, "densify": False}


def _batch(seed: int = 0, ratio: float | tuple[float, float] = 0.75):
    gen = torch.Generator().manual_seed(seed)
    x_bcdhw = torch.randn(2, 1, PATCH, PATCH, PATCH, generator=gen)
    return x_bcdhw, sample_block_mask(2, PATCH, 8, ratio, gen)


def _s3d(cfg: dict | None = None, seed: int = 0) -> S3D:
    torch.manual_seed(seed)
    return build_method("s3d", build_network("resenc-xs"), cfg)


@pytest.fixture(scope="module")
def t1_patch_bcdhw(anatomical_nii: Path) -> torch.Tensor:
    """nibabel's real T1 (33x41x25), z-scored, cropped to 32x32x16, plus its mirror: (2, 1, 32, 32, 16)."""
    data = np.asarray(nib.load(str(anatomical_nii)).dataobj, dtype=np.float32)
    data = (data - data.mean()) / data.std()
    crop = torch.from_numpy(np.ascontiguousarray(data[:32, 4:36, 4:20]))
    return torch.stack([crop, crop.flip(0)])[:, None].contiguous()


def _record(s3d: S3D, x_bcdhw, mask_b1ghw, **flags):
    """Run the sparse encoder with a probe; returns [(name, module, output clone, mask)] in call order."""
    seen = []
    masks = MaskPyramid(mask_b1ghw)

    def probe(name, mod, out, m):
        seen.append((name, mod, out.detach().clone(), m))

    sparse_encoder_forward(s3d.network.encoder, x_bcdhw * masks.at(x_bcdhw.shape[2:]), masks, probe=probe,
                           **flags)
    return seen


def test_sparse_ops_leave_masked_positions_zero_and_visit_every_conv_once():
    s3d = _s3d()
    x_bcdhw, mask_b1ghw = _batch(ratio=(0.5, 0.9))  # different visible counts per sample
    seen = _record(s3d, x_bcdhw, mask_b1ghw)
    masked_res = [(n, out, m) for n, _mod, out, m in seen if m is not None]
    assert {tuple(out.shape[2:]) for _, out, _ in masked_res} == {(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3}
    for name, out, m in masked_res:  # conv, pool, norm and residual-block outputs alike
        assert torch.all(out * (1 - m) == 0), name
        assert torch.any(out * m != 0), name
    assert any(m is None for *_, m in seen)  # the 2^3 bottleneck is coarser than the grid: dense
    encoder_convs = {id(m) for m in s3d.network.encoder.modules() if isinstance(m, _ConvNd)}
    visited = [id(mod) for _, mod, _, _ in seen if isinstance(mod, _ConvNd)]
    assert sorted(visited) == sorted(encoder_convs)  # each conv once (aliases .conv/.all_modules.0)
    assert any(isinstance(mod, _AvgPoolNd) for _, mod, _, _ in seen)


def test_sparse_norm_alone_keeps_stage_outputs_zero_at_masked_positions():
    """Without conv masking, the sparse norms alone still zero every block output (densify relies on it)."""
    s3d = _s3d({"sparse_conv": False})
    x_bcdhw, mask_b1ghw = _batch()
    seen = _record(s3d, x_bcdhw, mask_b1ghw, sparse_conv=False)
    checked = [(n, out, m) for n, mod, out, m in seen
               if m is not None and isinstance(mod, (_InstanceNorm, BasicBlockD))]
    assert len(checked) > 10
    for name, out, m in checked:
        assert torch.all(out * (1 - m) == 0), name
    conv_outs = [out * (1 - m) for _, mod, out, m in seen if m is not None and isinstance(mod, _ConvNd)]
    assert any(torch.any(o != 0) for o in conv_outs)  # conv outputs themselves are not masked here


def test_sparse_norm_statistics_come_from_visible_voxels_only():
    s3d = _s3d()
    with torch.no_grad():  # non-trivial affine parameters
        for mod in s3d.network.encoder.modules():
            if isinstance(mod, _InstanceNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    x_bcdhw, mask_b1ghw = _batch(ratio=(0.5, 0.9))
    seen = _record(s3d, x_bcdhw, mask_b1ghw)
    checked = 0
    for (_, prev_mod, conv_out, m), (_, mod, norm_out, _) in itertools.pairwise(seen):
        if not (isinstance(prev_mod, _ConvNd) and isinstance(mod, _InstanceNorm) and m is not None):
            continue
        for b in range(x_bcdhw.shape[0]):
            vis = m[b, 0].bool()
            v = conv_out[b][:, vis]  # (C, n) gathered visible voxels
            ref = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + mod.eps)
            ref = ref * mod.weight[:, None] + mod.bias[:, None]
            torch.testing.assert_close(norm_out[b][:, vis], ref, atol=2e-5, rtol=1e-4)
        checked += 1
    assert checked >= 8


def test_masked_instance_norm_matches_gather_reference_and_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 6, 6, generator=gen, dtype=torch.float64) * 3 + 2
    m = (torch.rand(2, 1, 6, 6, 6, generator=gen) > 0.6).double()
    n = m.flatten(1).sum(1)
    w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    out = masked_instance_norm(x, m, n, w, b, 1e-5)  # masked values of x are ignored
    assert torch.all(out * (1 - m) == 0)
    for i in range(2):
        v = x[i][:, m[i, 0].bool()]
        ref = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + 1e-5)
        torch.testing.assert_close(out[i][:, m[i, 0].bool()], ref * w[:, None] + b[:, None])
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: masked_instance_norm(x_, m, n, w_, b_, 1e-5),
                                    (xr, w, b), fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda x_: masked_instance_norm(x_ * m, m, n, None, None, 1e-5, input_masked=True), (xr,),
        fast_mode=True)


def test_masked_instance_norm_low_precision_runs_in_float32():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, 8, generator=gen)
    m = (torch.rand(2, 1, 8, 8, 8, generator=gen) > 0.5).float()
    n = m.flatten(1).sum(1)
    w, b = torch.rand(4) + 0.5, torch.randn(4)
    ref = masked_instance_norm(x, m, n, w, b, 1e-5)
    xb = x.bfloat16().requires_grad_(True)
    out = masked_instance_norm(xb, m.bfloat16(), n, w, b, 1e-5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)
    out.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16


def test_sparse_encoder_backward_is_exact_float64():
    """Numerical vs analytic gradient through the whole sparse walk (custom norm + mask backward)."""
    torch.manual_seed(0)
    arch = ArchitectureConfig(name="resenc-xs", features=[2, 3, 4], blocks=[1, 2, 1], strides=[1, 2, 2],
                              kernel_sizes=[3, 3, 3], decoder_convs=[1, 1])
    net = build_network(arch).double()
    gen = torch.Generator().manual_seed(1)
    masks = MaskPyramid(sample_block_mask(2, 8, 2, 0.5, gen))  # 4^3 grid: 8^3 and 4^3 maps masked
    x = torch.randn(2, 1, 8, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    shapes = ((2, 8), (3, 4), (4, 2))
    weights = [torch.randn(2, c, e, e, e, generator=gen, dtype=torch.float64) for c, e in shapes]

    def f(x_):
        skips = sparse_encoder_forward(net.encoder, x_, masks)
        return sum((s * w).sum() for s, w in zip(skips, weights, strict=True))

    assert torch.autograd.gradcheck(f, (x,), atol=1e-6, fast_mode=True)


def test_bf16_autocast_forward_backward():
    s3d = _s3d()
    x_bcdhw, mask_b1ghw = _batch()
    ref = s3d(x_bcdhw, mask_b1ghw).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s3d(x_bcdhw, mask_b1ghw)
    assert out.reconstruction_bcdhw.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref.detach(), rtol=0.05, atol=0.0)
    assert all(torch.isfinite(p.grad).all() for p in s3d.parameters() if p.grad is not None)


def test_all_visible_mask_gives_the_dense_encoder():
    s3d = _s3d()
    x_bcdhw, _ = _batch()
    visible = torch.ones(2, 1, 4, 4, 4, dtype=torch.bool)
    sparse = s3d.encode(x_bcdhw, MaskPyramid(visible))
    dense = s3d.network.encoder(x_bcdhw)
    assert len(sparse) == len(dense) == 5
    for a, b in zip(sparse, dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_all_switches_off_is_exactly_mae():
    torch.manual_seed(0)
    net = build_network("resenc-xs")
    x_bcdhw, mask_b1ghw = _batch()
    s3d = build_method("s3d", net, OFF)
    mae = build_method("mae", net)
    assert sum(p.numel() for p in s3d.parameters()) == count_parameters(net)  # no extra modules
    a, b = s3d(x_bcdhw, mask_b1ghw), mae(x_bcdhw, mask_b1ghw)
    assert torch.equal(a.reconstruction_bcdhw, b.reconstruction_bcdhw)
    assert torch.equal(a.loss, b.loss)


def test_mask_tokens_sit_exactly_at_masked_positions():
    s3d = _s3d()
    x_bcdhw, mask_b1ghw = _batch()
    captured = {}

    def keep(i, args):
        captured[i] = args[0].detach().clone()

    for i, conv in enumerate(s3d.densify_convs):  # the token-filled map is the densify conv's input
        conv.register_forward_pre_hook(lambda _m, args, i=i: keep(i, args))
    s3d(x_bcdhw, mask_b1ghw)
    for i, feat in captured.items():
        token = s3d.mask_tokens[i].detach()
        if i == 4:  # 2^3 bottleneck: all visible, no token anywhere
            assert not torch.any(torch.isclose(feat, token.expand_as(feat)).all(dim=1))
            continue
        hidden = ~upsample_mask(mask_b1ghw, feat.shape[2:]).expand(-1, feat.shape[1], -1, -1, -1)
        assert torch.equal(feat[hidden], token.expand_as(feat)[hidden])
        # at visible voxels: the densify-normed features (per-voxel vectors differ from the token)
        assert not torch.any(torch.isclose(feat, token.expand_as(feat)).all(dim=1)[~hidden[:, 0]])


def test_tokens_without_densify_fill_skips_directly():
    s3d = _s3d({"densify": False})
    x_bcdhw, mask_b1ghw = _batch()
    masks = MaskPyramid(mask_b1ghw)
    skips = s3d.encode(x_bcdhw, masks)
    dense = s3d.densify(skips, masks)
    for i in range(4):
        vis = masks.at(skips[i].shape[2:]).bool().expand_as(skips[i])
        assert torch.equal(dense[i][vis], skips[i][vis])
        assert torch.equal(dense[i][~vis], s3d.mask_tokens[i].detach().expand_as(skips[i])[~vis])
    assert torch.equal(dense[4], skips[4])


def test_zero_input_hides_masked_intensities_and_loss_ignores_visible_outputs():
    s3d = _s3d()
    x_bcdhw, mask_b1ghw = _batch()
    visible = upsample_mask(mask_b1ghw, x_bcdhw.shape[2:], torch.float32)
    out = s3d(x_bcdhw, mask_b1ghw)
    changed = x_bcdhw + 3.0 * (1 - visible)  # different intensities under the mask only
    assert torch.equal(s3d(changed, mask_b1ghw).reconstruction_bcdhw, out.reconstruction_bcdhw)
    leaky = _s3d({"zero_input": False})
    assert not torch.equal(leaky(changed, mask_b1ghw).reconstruction_bcdhw,
                           leaky(x_bcdhw, mask_b1ghw).reconstruction_bcdhw)  # the reference's leak
    (grad,) = torch.autograd.grad(out.loss, out.reconstruction_bcdhw)
    assert torch.all(grad[visible.bool()] == 0)
    assert torch.count_nonzero(grad[~visible.bool()]) == grad[~visible.bool()].numel()


def test_network_keys_are_plain_and_no_weight_is_duplicated():
    torch.manual_seed(0)
    net = build_network("resenc-xs")
    plain = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    s3d = build_method("s3d", net)
    assert {k: tuple(v.shape) for k, v in s3d.network.state_dict().items()} == plain
    extra = sum(p.numel() for n, p in s3d.named_parameters() if not n.startswith("network."))
    channels = [8, 16, 32, 64, 64]
    tokens = sum(channels)
    norms = 0  # densify norms have no affine parameters by default (nnssl's SparK3D)
    convs = sum(c * c * 27 + c for c in channels[1:])
    assert extra == tokens + norms + convs
    assert count_parameters(s3d) == 1_293_884 + extra
    assert {n.split(".")[0] for n in s3d.state_dict()} == {"network", "mask_tokens", "densify_convs"}


@pytest.mark.parametrize("cfg", [
    OFF,
    {**OFF, "sparse_conv": True, "sparse_norm": True},
    {**OFF, "sparse_conv": True, "sparse_norm": True, "mask_token": True},
    {},  # full S3D
    {"sparse_conv": False},
    {"sparse_norm": False},
    {"loss": "all"},
])
def test_ablation_switches_train(cfg):
    s3d = _s3d(cfg)
    x_bcdhw, mask_b1ghw = _batch()
    out = s3d(x_bcdhw, mask_b1ghw)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in s3d.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if s3d.mask_tokens is not None:
        assert all(t.grad.abs().sum() > 0 for t in list(s3d.mask_tokens)[:4])
    assert (s3d.mask_tokens is None) == (not S3DConfig(**cfg).mask_token)
    assert (s3d.densify_convs is None) == (not S3DConfig(**cfg).densify)


def test_mask_is_an_argument_not_state():
    s3d = _s3d()
    x_bcdhw, m1 = _batch(seed=0)
    _, m2 = _batch(seed=1)
    a1 = s3d(x_bcdhw, m1).reconstruction_bcdhw
    s3d(x_bcdhw, m2)
    assert torch.equal(s3d(x_bcdhw, m1).reconstruction_bcdhw, a1)


def test_s3d_learns_a_real_t1_patch(t1_patch_bcdhw):
    torch.manual_seed(0)
    s3d = build_method("s3d", build_network("resenc-xs"))
    opt = torch.optim.SGD(s3d.parameters(), lr=3e-2, momentum=0.9, nesterov=True)
    mask_b1ghw = sample_block_mask(2, (32, 32, 16), 8, 0.6, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(12):
        opt.zero_grad()
        out = s3d(t1_patch_bcdhw, mask_b1ghw)
        out.loss.backward()
        nn.utils.clip_grad_norm_(s3d.parameters(), 12.0)
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.75 * losses[0]  # measured: 1.10 -> 0.74


def test_densify_norm_has_no_affine_by_default_and_the_switch_adds_it():
    x_bcdhw, mask_b1ghw = _batch()
    masks = MaskPyramid(mask_b1ghw)
    plain = _s3d()
    assert all(n.weight is None and n.bias is None for n in plain.densify_norms)
    assert not any(name.startswith("densify_norms.") for name, _ in plain.named_parameters())
    affine = _s3d({"densify_affine": True})
    assert [tuple(n.weight.shape) for n in affine.densify_norms] == [(c,) for c in (8, 16, 32, 64, 64)]
    extra = sum(p.numel() for name, p in affine.named_parameters() if name.startswith("densify_norms."))
    assert extra == 2 * (8 + 16 + 32 + 64 + 64)

    captured: dict[str, list[torch.Tensor]] = {"plain": [], "affine": []}
    for key, s3d in (("plain", plain), ("affine", affine)):
        s3d.mask_tokens = None  # look at the normed features themselves (no token at masked voxels)
        for conv in s3d.densify_convs:
            conv.register_forward_pre_hook(lambda _m, args, key=key: captured[key].append(args[0].detach()))
    with torch.no_grad():
        for n in affine.densify_norms:
            n.weight.uniform_(0.5, 2.0)
            n.bias.uniform_(-1.0, 1.0)
        plain(x_bcdhw, mask_b1ghw)
        affine(x_bcdhw, mask_b1ghw)
    for i in range(4):  # the masked stages: statistics over visible voxels
        feat = captured["plain"][i]
        m = masks.at(feat.shape[2:]).bool()
        per = [feat[b][:, m[b, 0]] for b in range(feat.shape[0])]  # (C, visible) per sample
        for v in per:  # no affine: zero mean, unit variance per channel over the visible voxels
            assert torch.allclose(v.mean(1), torch.zeros(v.shape[0]), atol=1e-4)
            assert torch.allclose(v.var(1, unbiased=False), torch.ones(v.shape[0]), atol=1e-2)
        # the affine switch applies weight * normed + bias (same encoder weights: same seed)
        w = affine.densify_norms[i].weight.view(1, -1, 1, 1, 1)
        b = affine.densify_norms[i].bias.view(1, -1, 1, 1, 1)
        expect = (feat * w + b) * m
        assert torch.allclose(captured["affine"][i] * m, expect, atol=1e-5)
