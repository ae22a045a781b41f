from __future__ import annotations

import pytest

from mae3d.pretraining.config import OptimConfig
from mae3d.pretraining.schedules import lr_at


def test_poly_matches_nnunet_formula():
    cfg = OptimConfig(lr=1e-2, poly_exponent=0.9)
    assert lr_at(cfg, 0, 1000) == pytest.approx(1e-2)
    assert lr_at(cfg, 500, 1000) == pytest.approx(1e-2 * 0.5**0.9)
    assert lr_at(cfg, 999, 1000) == pytest.approx(1e-2 * 0.001**0.9)


def test_warmup_poly_and_constant():
    cfg = OptimConfig(lr=1e-2, schedule="warmup-poly", warmup_epochs=50)
    assert lr_at(cfg, 0, 1000) == pytest.approx(1e-2 / 50)
    assert lr_at(cfg, 49, 1000) == pytest.approx(1e-2)
    assert lr_at(cfg, 50, 1000) == pytest.approx(1e-2)
    assert lr_at(cfg, 525, 1000) == pytest.approx(1e-2 * 0.5**0.9)
    assert lr_at(OptimConfig(lr=3e-3, schedule="constant"), 700, 1000) == pytest.approx(3e-3)
    with pytest.raises(KeyError, match="unknown lr schedule 'cosine'; valid: constant, poly, warmup-poly"):
        lr_at(OptimConfig(schedule="cosine"), 0, 10)
