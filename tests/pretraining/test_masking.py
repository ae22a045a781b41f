"""Block-mask sampling and upsampling."""

from __future__ import annotations

import pytest
import torch

from mae3d.pretraining.masking import (
    MaskError,
    mask_grid_shape,
    num_masked_blocks,
    sample_block_mask,
    upsample_mask,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masked_counts(mask_b1ghw: torch.Tensor) -> list[int]:
    return (~mask_b1ghw).flatten(1).sum(1).tolist()


def test_fixed_ratio_masks_exact_count_per_sample():
    mask = sample_block_mask(8, 64, 16, 0.75, _gen())
    assert mask.shape == (8, 1, 4, 4, 4) and mask.dtype == torch.bool
    assert _masked_counts(mask) == [48] * 8
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 8  # independent per sample


def test_rounding_is_half_up_and_keeps_one_block_visible():
    # 5 blocks at ratio 0.5 -> 2.5 -> 3 masked (Python's round() would give 2)
    assert _masked_counts(sample_block_mask(2, (40, 8, 8), 8, 0.5, _gen())) == [3, 3]
    assert num_masked_blocks(0.99, 8) == 7  # 7.92 rounds to 8, clamped so one block stays visible
    assert num_masked_blocks(0.0, 8) == 0


def test_ratio_range_draws_per_sample_within_bounds():
    mask = sample_block_mask(64, 80, 16, (0.6, 0.9), _gen())  # 125 blocks
    counts = _masked_counts(mask)
    assert all(75 <= c <= 113 for c in counts)  # round(0.6*125)=75, round(0.9*125)=112.5->113
    assert len(set(counts)) > 10
    assert 90 < sum(counts) / len(counts) < 98  # mean ratio ~0.75


def test_seeded_generator_reproduces_and_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a = sample_block_mask(4, 64, 16, (0.6, 0.9), _gen(7))
    torch.manual_seed(123)  # the global RNG must not matter
    b = sample_block_mask(4, 64, 16, (0.6, 0.9), _gen(7))
    c = sample_block_mask(4, 64, 16, (0.6, 0.9), _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.random.set_rng_state(state)
    sample_block_mask(4, 64, 16, 0.75, _gen(7))
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("patch", "block", "ratio", "match"),
    [(160, 48, 0.75, "does not divide"), ((64, 64, 60), 16, 0.75, "does not divide"),
     (64, 16, 1.0, "0 <= lo <= hi < 1"), (64, 16, (0.9, 0.6), "0 <= lo <= hi < 1"),
     (64, 0, 0.75, "positive"), (64, 16, (0.5, 0.6, 0.7), "pair")],
)
def test_bad_parameters_raise_clear_errors(patch, block, ratio, match):
    with pytest.raises(MaskError, match=match):
        sample_block_mask(2, patch, block, ratio, _gen())


def test_grid_shape_anisotropic():
    assert mask_grid_shape((64, 64, 32), (16, 16, 8)) == (4, 4, 4)


def test_upsample_matches_repeat_interleave_and_handles_coarse_maps():
    mask = sample_block_mask(2, (32, 64, 64), 16, 0.5, _gen())  # grid 2x4x4
    up = upsample_mask(mask, (16, 32, 64), torch.float32)
    ref = mask.float().repeat_interleave(8, 2).repeat_interleave(8, 3).repeat_interleave(16, 4)
    assert up.shape == (2, 1, 16, 32, 64) and up.dtype == torch.float32
    assert torch.equal(up, ref)
    assert upsample_mask(mask, (2, 4, 4)).equal(mask)  # grid resolution: identity
    coarse = upsample_mask(mask, (1, 2, 2))  # coarser than the grid on some axis -> all visible
    assert coarse.shape == (2, 1, 1, 2, 2) and bool(coarse.all())
    with pytest.raises(MaskError, match="not a multiple"):
        upsample_mask(mask, (5, 8, 8))


def test_default_ratio_is_per_sample_uniform_0_6_to_0_9():
    """The paper's dynamic ratio: each sample draws its own ratio ~ U(0.6, 0.9), independently."""
    from mae3d.pretraining.config import MaskConfig

    cfg = MaskConfig()
    assert tuple(cfg.ratio) == (0.6, 0.9)
    mask = sample_block_mask(4000, 160, 16, tuple(cfg.ratio), _gen(3))  # 10^3 = 1000 blocks per sample
    r = torch.tensor(_masked_counts(mask), dtype=torch.float64) / 1000
    assert r.min() >= 0.6 and r.max() <= 0.9
    assert r.min() < 0.605 and r.max() > 0.895  # the whole range is reached
    assert abs(float(r.mean()) - 0.75) < 0.005
    assert abs(float(r.std()) - 0.3 / 12**0.5) < 0.005  # the std of U(0.6, 0.9)
    thirds = torch.histc(r, bins=3, min=0.6, max=0.9) / len(r)
    assert bool((thirds - 1 / 3).abs().max() < 0.03)  # uniform, not clustered
    lag1 = torch.corrcoef(torch.stack([r[:-1], r[1:]]))[0, 1]
    assert abs(float(lag1)) < 0.05  # independent per sample (not one ratio per batch)
    assert len(set(r[:6].tolist())) == 6  # a batch of 6 has 6 different ratios


def test_fixed_ratio_option_gives_exact_counts():
    from mae3d.config import apply_overrides
    from mae3d.pretraining.config import PretrainConfig

    cfg = apply_overrides(PretrainConfig(), ["method.mask.ratio=0.75"])
    assert cfg.method.mask.ratio == 0.75
    mask = sample_block_mask(50, 160, 32, cfg.method.mask.ratio, _gen())  # 5^3 = 125 blocks
    assert _masked_counts(mask) == [94] * 50  # 93.75 rounds half up to 94
