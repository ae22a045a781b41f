"""Python API of the pre-training stage: ``pretrain(cfg, out_dir)``."""

from __future__ import annotations

from pathlib import Path

from mae3d.pretraining.config import PretrainConfig
from mae3d.pretraining.distributed import barrier, distributed
from mae3d.pretraining.trainer import FINAL, LATEST, Pretrainer

__all__ = ["pretrain"]


def pretrain(cfg: PretrainConfig, out_dir: str | Path, *, resume: bool | str = False) -> Path:
    """Pre-train as configured; works alone and under ``torchrun`` (one call per rank).

    Args:
        cfg: the resolved run configuration.
        out_dir: run folder. A folder that already holds a finished or started run is only used
            with ``resume=True`` (nothing is overwritten silently).
        resume: continue from ``checkpoint_latest.pth`` (or from ``checkpoint_final.pth`` when
            ``train.epochs`` was raised), restoring model, optimiser, scaler, RNG and epoch.
            ``"auto"``: resume if the folder holds a run, else start one (for re-submitted jobs).

    Returns:
        Path of ``checkpoint_final.pth``.
    """
    out = Path(out_dir)
    started = [p for p in (out / LATEST, out / FINAL) if p.exists()]
    if resume == "auto":
        resume = bool(started)
    if started and not resume:
        raise FileExistsError(f"{out}: already holds a run ({started[0].name}); pass --resume to continue "
                              "it or choose another output folder")
    if resume and not started:
        raise FileNotFoundError(f"{out}: nothing to resume (no {LATEST} or {FINAL})")
    with distributed(cfg.train.device) as info:
        trainer = Pretrainer(cfg, out, info)
        if resume:
            trainer.resume(started[0])
        final = trainer.run()
        barrier(info)
    return final
