"""Learning-rate schedules for pre-training, stepped once per epoch (as nnU-Net and nnssl do).

Only the registry of named schedules lives here; the formulas (poly, linear warm-up) are the ones
fine-tuning uses too, in :mod:`mae3d.utils.lr`.
"""

from __future__ import annotations

from collections.abc import Callable

from mae3d.pretraining.config import OptimConfig
from mae3d.utils.lr import linear_warmup, poly
from mae3d.utils.registry import Registry

__all__ = ["SCHEDULES", "lr_at"]

# (optim config, epoch, total epochs) -> learning rate
Schedule = Callable[[OptimConfig, int, int], float]
SCHEDULES: Registry[Schedule] = Registry("lr schedule")


@SCHEDULES.register("poly")
def poly_schedule(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """nnU-Net's PolyLR: ``lr * (1 - epoch / epochs) ** exponent``."""
    return poly(cfg.lr, epoch, end=epochs, exponent=cfg.poly_exponent)


@SCHEDULES.register("constant")
def constant(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    return cfg.lr


@SCHEDULES.register("warmup-poly")
def warmup_poly(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_epochs`` (lr * (e+1)/W), then poly over the rest."""
    w = cfg.warmup_epochs
    if epoch < w:
        return linear_warmup(cfg.lr, epoch, length=w)
    return poly(cfg.lr, epoch, start=w, end=max(epochs, w + 1), exponent=cfg.poly_exponent)


def lr_at(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch`` (0-based) under ``cfg.schedule``."""
    return SCHEDULES.get(cfg.schedule)(cfg, epoch, epochs)
