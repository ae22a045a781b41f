"""Augmentation parameters: reproducible draws, probabilities, geometry of the sampling box."""

from __future__ import annotations

import numpy as np
import pytest

from mae3d.config import ConfigError, apply_overrides, from_dict, to_dict
from mae3d.pretraining.data.config import AugmentConfig, LoaderConfig
from mae3d.pretraining.data.params import PatchParams, draw_params, output_bbox, rotation_matrix


def test_draws_are_reproducible_and_probabilities_hold():
    aug = AugmentConfig()
    a = [draw_params(np.random.default_rng(3), (200, 220, 180), (160, 160, 160), aug) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    draws = [draw_params(rng, (200, 220, 180), (160, 160, 160), aug) for _ in range(4000)]
    rot = np.mean([any(d.angles_rad) for d in draws])
    scl = np.mean([d.scale != 1.0 for d in draws])
    mir = np.mean([d.mirror for d in draws], axis=0)
    assert abs(rot - 0.2) < 0.03 and abs(scl - 0.2) < 0.03 and np.all(np.abs(mir - 0.5) < 0.04)
    assert abs(np.mean([d.transformed for d in draws]) - 0.36) < 0.03
    assert max(abs(x) for d in draws for x in d.angles_rad) <= np.deg2rad(30)
    assert all(0.7 <= d.scale <= 1.4 for d in draws)
    # the untransformed patch lies inside the volume; a short axis is centred
    for d in draws[:200]:
        lo = d.crop_start((160, 160, 160))
        assert np.all(lo >= 0) and np.all(lo + 160 <= np.array([200, 220, 180]))
    small = draw_params(rng, (100, 170, 160), (160, 160, 160), AugmentConfig.none())
    assert small.crop_start((160, 160, 160))[0] == -30 and not small.transformed and not any(small.mirror)


def test_rotation_matrix_and_bbox():
    r = rotation_matrix((0.3, -0.2, 0.5))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    p = PatchParams((50.0, 50.0, 50.0), angles_rad=(0.0, 0.0, np.pi / 4), scale=1.0)
    start, stop = output_bbox(p, (21, 21, 21))
    # a 45° rotation widens axes 0 and 1 by sqrt(2), keeps axis 2 (+ neighbours and rounding slack)
    assert stop[2] - start[2] in (22, 23)
    assert abs((stop[0] - start[0]) - (20 * np.sqrt(2) + 2)) <= 1.5
    assert np.all(start[:2] <= 50 - 10 * np.sqrt(2)) and np.all(stop[:2] >= 50 + 10 * np.sqrt(2) + 1)
    ident = PatchParams((10.5, 10.5, 10.5), mirror=(True, False, False))
    s, e = output_bbox(ident, (8, 8, 8))
    assert s.tolist() == [7, 7, 7] and e.tolist() == [15, 15, 15]


def test_config_round_trip_and_validation():
    overrides = ["patch_size=[32,32,32]", "augment.p_rotation=1.0", "masks=[anonymization]"]
    cfg = apply_overrides(LoaderConfig(), overrides)
    assert cfg.patch_size == (32, 32, 32) and cfg.augment.p_rotation == 1.0
    assert cfg.masks == ("anonymization",)
    assert from_dict(LoaderConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="p_scale"):
        apply_overrides(LoaderConfig(), ["augment.p_scale=1.5"])
    with pytest.raises(ConfigError, match="masks"):
        apply_overrides(LoaderConfig(), ["masks=[brain]"])


def _scales(aug: AugmentConfig, n: int = 10_000) -> np.ndarray:
    """Scales of ``n`` draws with scaling always on."""
    rng = np.random.default_rng(5)
    aug = AugmentConfig(**{**to_dict(aug), "scale": tuple(aug.scale), "mirror_axes": tuple(aug.mirror_axes),
                           "p_scale": 1.0})
    return np.array([draw_params(rng, (40, 40, 40), (16, 16, 16), aug).scale for _ in range(n)])


def test_scale_is_drawn_like_batchgenerators_half_below_one():
    s = _scales(AugmentConfig())  # default scale (0.7, 1.4), draw "split"
    assert AugmentConfig().scale_draw == "split"
    below = s < 1.0
    assert abs(below.mean() - 0.5) < 0.02  # U(0.7, 1.4) would give 3/7 = 0.43
    assert s.min() >= 0.7 and s.max() <= 1.4
    assert s[below].min() < 0.71 and s[~below].max() > 1.39
    # each side is uniform: means of U(0.7, 1) and U(1, 1.4)
    assert abs(s[below].mean() - 0.85) < 0.01 and abs(s[~below].mean() - 1.2) < 0.01
    # a range entirely above 1: every draw from U(lo, hi)
    up = _scales(AugmentConfig(scale=(1.1, 1.3)), 2000)
    assert up.min() >= 1.1 and up.max() <= 1.3 and abs(up.mean() - 1.2) < 0.01


def test_uniform_scale_draw_is_a_switch():
    s = _scales(AugmentConfig(scale_draw="uniform"))
    assert abs((s < 1.0).mean() - 3 / 7) < 0.02
    assert s.min() >= 0.7 and s.max() <= 1.4 and abs(s.mean() - 1.05) < 0.01
    with pytest.raises(ConfigError, match="scale_draw"):
        apply_overrides(LoaderConfig(), ["augment.scale_draw=gauss"])


def test_loader_seed_is_gone_and_names_train_seed():
    with pytest.raises(ConfigError, match=r"config key 'seed' was removed: .*set train\.seed instead"):
        from_dict(LoaderConfig, {"seed": 3})
    from mae3d.pretraining.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"config key 'loader\.seed' was removed: .*train\.seed"):
        apply_overrides(PretrainConfig(), ["loader.seed=3"])
    with pytest.raises(ConfigError, match=r"'loader\.seed' was removed"):
        from_dict(PretrainConfig, {"loader": {"seed": 3}})


def test_data_selection_is_the_corpus_filter():
    from mae3d.corpus.filters import CorpusFilter
    from mae3d.pretraining.config import PretrainConfig

    cfg = apply_overrides(PretrainConfig(), ["data.filter.modalities=[T1w]", "data.filter.max_quality=3.0"])
    assert isinstance(cfg.data.filter, CorpusFilter)
    assert cfg.data.filter == CorpusFilter(modalities=["T1w"], max_quality=3.0)
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"'data\.modalities' was removed: moved to data\.filter\.modal"):
        apply_overrides(PretrainConfig(), ["data.modalities=[T1w]"])
