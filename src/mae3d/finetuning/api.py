"""``finetune()``: plan, preprocess and train nnU-Net v2 on a raw dataset, optionally from a checkpoint.

Output layout (``out_dir``)::

    <out>/nnUNet_preprocessed/<Dataset>/            fingerprint, plans files, preprocessed data
    <out>/<Dataset>/FinetuneTrainer__<plans>__3d_fullres/      the model folder (returned)
        plans.json, dataset.json, dataset_fingerprint.json
        fold_<k>/checkpoint_final.pth, progress.png, training_log_*.txt, validation/,
                 transfer_report.json (pre-trained runs), config.json (config + provenance)

which is nnU-Net's ``nnUNet_results`` layout (``nnUNet_results = <out>``). The plans name carries
the checkpoint and schedule (e.g. ``mae3dPlans_ckpt-1a2b3c4d_sawtooth``), so runs that differ in
those get separate model folders; other differences need another ``out_dir``.

nnU-Net starts ``spawn`` worker processes (preprocessing, validation export), which re-import the
calling script: call :func:`finetune` from a script only under ``if __name__ == "__main__":``
(the ``mae3d`` console command is safe).

Folds of one dataset may train in parallel into the same ``out_dir`` once its plans and preprocessed
data exist (run one fold first, or :func:`~mae3d.finetuning.planning.prepare_plans`): two processes
preprocessing the same dataset at the same time are not coordinated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mae3d.config import to_dict, write_run_config
from mae3d.finetuning.config import FinetuneConfig
from mae3d.finetuning.environment import nnunet_environment
from mae3d.finetuning.network import DEFAULT_KEYS
from mae3d.finetuning.planning import (
    CONFIGURATION,
    PREPROCESSED_DIRNAME,
    PlanError,
    PreparedPlans,
    prepare_plans,
)
from mae3d.finetuning.pretrained import PretrainedCheckpoint, read_checkpoint
from mae3d.finetuning.schedules import make_schedule
from mae3d.finetuning.trainer import FinetuneTrainer, TrainerSetup, create_trainer
from mae3d.io.atomic import read_json
from mae3d.utils.seeding import seed_everything

__all__ = ["TRAINER_NAME", "finetune", "model_dir_for", "trainer_setup"]

log = logging.getLogger(__name__)

TRAINER_NAME = FinetuneTrainer.__name__
_RESUME_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")  # as nnU-Net --c


def model_dir_for(out_dir: str | Path, dataset_name: str, plans_name: str) -> Path:
    """``<out>/<Dataset>/FinetuneTrainer__<plans>__3d_fullres`` (nnU-Net's results layout)."""
    return Path(out_dir) / dataset_name / f"{TRAINER_NAME}__{plans_name}__{CONFIGURATION}"


def _check_inputs(cfg: FinetuneConfig, checkpoint: Path | None) -> None:
    if cfg.baseline == "dynamic" and checkpoint is not None:
        raise PlanError("the dynamic baseline trains nnU-Net's own plans and architecture from scratch and "
                        "cannot load a checkpoint; drop --checkpoint or use another baseline")
    if cfg.plans == "fixed" and checkpoint is None:
        raise PlanError("fixed plans copy the checkpoint's architecture, spacing and patch: pass "
                        "--checkpoint (with --baseline fixed for the untrained fixed baseline) or use "
                        "--baseline dynamic")


def _fold_state(fold_dir: Path, cfg: FinetuneConfig, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: fresh start); refuse to touch finished or foreign work."""
    existing = next((fold_dir / n for n in _RESUME_ORDER if (fold_dir / n).is_file()), None)
    saved = fold_dir / "config.json"
    if saved.is_file():
        old, new = read_json(saved).get("config") or {}, to_dict(cfg)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise FileExistsError(f"{fold_dir}: holds a run with a different config (differs in {diff}); "
                                  "use another output folder")
    if not resume:
        if existing is not None or saved.is_file():
            what = "a finished" if (fold_dir / "checkpoint_final.pth").is_file() else "an unfinished"
            raise FileExistsError(f"{fold_dir}: holds {what} run; pass --continue to resume / re-validate it "
                                  "or use another output folder")
        return None
    return existing


def trainer_setup(cfg: FinetuneConfig, prepared: PreparedPlans, pretrained: PretrainedCheckpoint | None
                  ) -> TrainerSetup:
    """The trainer's settings for one run: the arm's schedule and peak lr, weights to load, keys, workers."""
    _, export_workers, _ = cfg.resolved_workers()
    load_weights = pretrained is not None and not cfg.from_scratch
    schedule = make_schedule(cfg.schedule_name, cfg.schedule, epochs=cfg.epochs, peak_lr=cfg.peak_lr())
    num_channels = len(prepared.dataset_json["channel_names"])
    return TrainerSetup(
        cfg=cfg, schedule=schedule, pretrained=pretrained if load_weights else None,
        keys=(prepared.plans.get("mae3d_pretrain") or {}).get("keys", DEFAULT_KEYS),
        in_proj_adapted=load_weights and pretrained is not None and num_channels != pretrained.in_channels,
        export_workers=export_workers,
    )


def finetune(dataset_dir: str | Path, checkpoint: str | Path | None, out_dir: str | Path,
             cfg: FinetuneConfig | None = None, *, resume: bool = False) -> Path:
    """Fine-tune (or train from scratch) nnU-Net v2 on an nnU-Net raw dataset.

    Args:
        dataset_dir: ``.../DatasetXXX_Name`` with ``imagesTr``, ``labelsTr``, ``dataset.json``.
        checkpoint: pre-trained checkpoint (mae3d or nnssl/OpenMind). Required for the pre-trained arm
            and the fixed baseline (``cfg.baseline == "fixed"`` uses its plans but not its weights);
            must be None for the dynamic baseline.
        out_dir: output root (see module docstring).
        cfg: run configuration (default: the paper's protocol, fold 0).
        resume: continue from the fold's latest checkpoint (nnU-Net's ``--c``); a finished run is
            only re-validated.

    Returns:
        The model folder ``<out>/<Dataset>/FinetuneTrainer__<plans>__3d_fullres`` (holds ``fold_<k>``).

    Raises:
        DatasetError / PlanError / CheckpointError (ValueError): bad dataset, plans or checkpoint.
        FileExistsError: the fold folder holds another or a finished run and ``resume`` is False.
    """
    cfg = cfg or FinetuneConfig()
    out_dir = Path(out_dir)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    _check_inputs(cfg, ckpt_path)
    device = cfg.resolved_device()
    pretrained: PretrainedCheckpoint | None = read_checkpoint(ckpt_path) if ckpt_path is not None else None

    prepared = prepare_plans(dataset_dir, out_dir / PREPROCESSED_DIRNAME, cfg, pretrained)
    n_cases = int(prepared.dataset_json["numTraining"])
    if cfg.fold != "all" and n_cases < 5 and not (prepared.preprocessed_dir / "splits_final.json").is_file():
        raise PlanError(f"{dataset_dir}: fold {cfg.fold} needs nnU-Net's 5-fold split, i.e. >= 5 training "
                        f"cases (found {n_cases}); use --fold all or add a splits_final.json to the dataset")
    model_dir = model_dir_for(out_dir, prepared.dataset_name, prepared.plans_name)
    fold_dir = model_dir / f"fold_{cfg.fold}"
    resume_from = _fold_state(fold_dir, cfg, resume)

    da_workers, _, _ = cfg.resolved_workers()
    setup = trainer_setup(cfg, prepared, pretrained)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net's run_training
    with nnunet_environment(raw=Path(dataset_dir).parent, preprocessed=out_dir / PREPROCESSED_DIRNAME,
                            results=out_dir, da_workers=da_workers, compile_network=cfg.compile):
        if cfg.seed is not None:
            seed_everything(cfg.seed)  # before the network is built: initial weights and samples repeat
        trainer = create_trainer(prepared.plans, CONFIGURATION, cfg.fold, prepared.dataset_json, device,
                                 setup, resume=resume_from is not None)
        if resume_from is not None:
            log.info("resuming %s from %s", fold_dir, resume_from.name)
            trainer.load_checkpoint(str(resume_from))
        write_run_config(fold_dir, cfg)
        trainer.run_training()
        if cfg.final_validation:
            trainer.perform_actual_validation(False)
    return model_dir
