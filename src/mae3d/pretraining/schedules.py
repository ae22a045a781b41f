"""Learning-rate schedules for pre-training, stepped once per epoch (as nnU-Net and nnssl do)."""

from __future__ import annotations

from collections.abc import Callable

from mae3d.pretraining.config import OptimConfig
from mae3d.utils.registry import Registry

__all__ = ["SCHEDULES", "lr_at"]

# (optim config, epoch, total epochs) -> learning rate
Schedule = Callable[[OptimConfig, int, int], float]
SCHEDULES: Registry[Schedule] = Registry("lr schedule")


@SCHEDULES.register("poly")
def poly(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """nnU-Net's PolyLR: ``lr * (1 - epoch / epochs) ** exponent``."""
    return cfg.lr * (1.0 - epoch / epochs) ** cfg.poly_exponent


@SCHEDULES.register("constant")
def constant(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    return cfg.lr


@SCHEDULES.register("warmup-poly")
def warmup_poly(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_epochs`` (lr * (e+1)/W), then poly over the rest."""
    w = cfg.warmup_epochs
    if epoch < w:
        return cfg.lr * (epoch + 1) / w
    return cfg.lr * (1.0 - (epoch - w) / max(epochs - w, 1)) ** cfg.poly_exponent


def lr_at(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch`` (0-based) under ``cfg.schedule``."""
    return SCHEDULES.get(cfg.schedule)(cfg, epoch, epochs)
