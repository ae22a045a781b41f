"""Typed configuration of a fine-tuning run (``mae3d finetune``).

One run is one of three arms, chosen by ``baseline`` (docs/finetuning.md has the full table):

* ``none`` (default), pre-trained: the checkpoint's fixed plans and weights; the paper's / nnssl fork's
  protocol - 1000 epochs x 250 iterations, batch 2, SGD Nesterov momentum 0.99, weight decay 3e-5,
  deep supervision off, the two-stage "sawtooth" schedule (decoder-only warm-up + poly, then
  whole-network warm-up + poly) at peak lr 1e-3, optimizer momentum reset when the encoder unfreezes;
* ``fixed``, "No pre-training (Fixed)": the same fixed plans and everything else as the pre-trained
  arm, without loading the weights, at peak lr 1e-2 (the fork's ``--from_scratch`` lr);
* ``dynamic``, "No pre-training (Dynamic)": nnU-Net's own ResEnc plans for the dataset and nnU-Net's
  ``nnUNetTrainer`` defaults - deep supervision on, poly lr from 1e-2 without warm-up, the planner's
  batch and patch size.

Fields left ``None`` resolve per arm (:attr:`FinetuneConfig.schedule_name`,
:meth:`FinetuneConfig.peak_lr`, :meth:`FinetuneConfig.resolved_deep_supervision`); they stay ``None``
in the saved config so that the config remains reusable for another arm. Everything that nnU-Net
hard-codes in trainer subclasses (``nnUNetTrainer_250epochs`` ...) is a field here instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from mae3d.config import ConfigError
from mae3d.finetuning.schedules import SCHEDULES
from mae3d.utils.device import resolve_device

__all__ = ["BASELINES", "FinetuneConfig", "ScheduleConfig"]

#: peak learning rates of the nnssl fine-tuning fork (PretrainedTrainer): pre-trained vs from scratch;
#: the latter is also nnU-Net's nnUNetTrainer.initial_lr
PRETRAINED_LR = 1e-3
SCRATCH_LR = 1e-2
#: the run's arm: pre-trained weights ("none"), or one of the two from-scratch baselines
BASELINES: tuple[str, ...] = ("none", "fixed", "dynamic")
#: schedule used when ``schedule.name`` is null: the paper's schedule with fixed plans, nnU-Net's
#: default for its own (dynamic) plans
DEFAULT_SCHEDULE = {"none": "sawtooth", "fixed": "sawtooth", "dynamic": "poly"}


@dataclass
class ScheduleConfig:
    """Learning-rate / trainable-parameter schedule (see :mod:`mae3d.finetuning.schedules`).

    Epoch counts are explicit and are *not* rescaled when ``epochs`` is changed.
    """

    # sawtooth | warmup | frozen | linear-probe | poly | none; null: sawtooth with fixed plans (pre-trained
    # and the fixed baseline), poly for the dynamic baseline (nnU-Net's default)
    name: str | None = None
    # linear warm-up length of warmup / frozen / linear-probe (0 = start at the peak lr)
    warmup_epochs: int = 50
    # sawtooth: decoder-only warm-up, decoder-only poly, whole-network warm-up; then poly to the end
    decoder_warmup_epochs: int = 25
    decoder_poly_epochs: int = 25
    full_warmup_epochs: int = 50
    poly_exponent: float = 0.9
    # when the trainable parameter set changes (sawtooth: the encoder unfreezes) build a new optimizer,
    # so every momentum buffer starts at zero, as nnssl's PretrainedTrainer_sawtooth does; false: keep the
    # momentum of the parameters that train before and after the change (the decoder's)
    reset_momentum: bool = True

    def __post_init__(self) -> None:
        for name in ("warmup_epochs", "decoder_warmup_epochs", "decoder_poly_epochs", "full_warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"schedule.{name} must be >= 0, got {getattr(self, name)}")
        if self.poly_exponent <= 0:
            raise ConfigError(f"schedule.poly_exponent must be > 0, got {self.poly_exponent}")
        if self.name is not None and self.name not in SCHEDULES:
            raise ConfigError(f"schedule.name: unknown schedule {self.name!r}; valid: {', '.join(SCHEDULES)}")


@dataclass
class FinetuneConfig:
    """One fine-tuning run of nnU-Net v2 on a raw dataset, optionally from a pre-trained checkpoint."""

    # cross-validation fold 0..4 of nnU-Net's seeded 5-fold split, or "all" (train = validate = all cases)
    fold: int | str = 0
    # none: fine-tune the checkpoint's weights on its fixed plans (architecture, spacing, patch);
    # fixed: "No pre-training (Fixed)", the same plans and settings without the weights, lr 1e-2;
    # dynamic: "No pre-training (Dynamic)", nnU-Net's own ResEnc plans and nnUNetTrainer's defaults
    baseline: Literal["none", "fixed", "dynamic"] = "none"
    # auto = cuda if available else cpu
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    # null: 2 for fixed plans (paper), the planner's value for dynamic plans
    batch_size: int | None = None
    # fixed plans: "pretrained" = ZScoreNormalization on every channel, as in pre-training (paper, nnssl
    # fork); "nnunet" = nnU-Net's scheme per channel name (e.g. CTNormalization for CT), which the fork
    # cannot do (nnssl.md §8 item 16)
    normalization: Literal["pretrained", "nnunet"] = "pretrained"
    # null: the checkpoint's recommended downstream patch (else its pre-training patch) for fixed plans,
    # the planner's patch for dynamic plans. Smaller patches make CPU runs feasible.
    patch_size: tuple[int, int, int] | None = None
    # peak learning rate; null: 1e-3 with pre-trained weights, 1e-2 for both baselines
    lr: float | None = None
    weight_decay: float = 3e-5
    momentum: float = 0.99
    # null: off with fixed plans (nnssl fork), on for the dynamic baseline (nnU-Net)
    deep_supervision: bool | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # nnU-Net planner for the dynamic baseline (paper: ResEnc-L with dataset-specific planning)
    dynamic_planner: Literal["ResEncL", "ResEncM"] = "ResEncL"
    # data-augmentation worker processes (nnU-Net's nnUNet_n_proc_DA, set by mae3d inside its own
    # process); 0 = augment in the training process. null: 0 on cpu, min(12, cpus - 1) on cuda
    da_workers: int | None = None
    # processes exporting the final validation predictions / computing their metrics. null: 1 on cpu,
    # min(8, cpus) on cuda
    export_workers: int | None = None
    # processes for fingerprint extraction and preprocessing. null: min(4, cpus)
    preprocess_workers: int | None = None
    # check every case (files, channels, shapes, geometry, label values) before planning
    verify_dataset: bool = True
    # run nnU-Net's final validation (sliding-window prediction + Dice of the validation cases)
    final_validation: bool = True
    # test-time mirroring in that validation (nnU-Net: on; 8x the compute in 3-D)
    validation_mirroring: bool = True
    # nnU-Net writes checkpoint_latest.pth every this many epochs (resume point)
    save_every: int = 50
    # torch.compile the network (cuda only; nnU-Net compiles by default, mae3d does not)
    compile: bool = False
    # seed of Python's, NumPy's and torch's generators in the training process, set before the network is
    # built: initialisation, case sampling and (with da_workers = 0) augmentation repeat exactly. nnU-Net's
    # augmentation worker processes seed themselves from OS entropy, so with da_workers > 0 the batches
    # differ between runs. null: not seeded (nnU-Net's behaviour)
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fold, str) and self.fold != "all":
            if not self.fold.isdigit():
                raise ConfigError(f"fold: expected 0..4 or 'all', got {self.fold!r}")
            self.fold = int(self.fold)
        if isinstance(self.fold, int) and self.fold < 0:
            raise ConfigError(f"fold: expected 0..4 or 'all', got {self.fold}")
        for name in ("epochs", "iterations_per_epoch", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_iterations_per_epoch < 0:
            raise ConfigError(f"val_iterations_per_epoch must be >= 0, got {self.val_iterations_per_epoch}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patch_size is not None and any(p < 1 for p in self.patch_size):
            raise ConfigError(f"patch_size must be positive, got {list(self.patch_size)}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("da_workers", "export_workers", "preprocess_workers"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "da_workers" else 1):
                raise ConfigError(f"{name} must be >= {0 if name == 'da_workers' else 1}, got {value}")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline: expected one of {', '.join(BASELINES)}, got {self.baseline!r}")
        name = self.schedule_name
        if self.baseline == "dynamic" and name in ("frozen", "linear-probe", "sawtooth"):
            raise ConfigError(f"schedule {name!r} freezes the encoder, which needs pre-trained weights; the "
                              "dynamic baseline trains nnU-Net's own network from scratch")
        if name == "linear-probe" and self.deep_supervision:
            raise ConfigError("linear-probe has a single full-resolution head; set deep_supervision=false")

    # ---- the arm and values resolved against it (nulls stay null in the saved config) ----

    @property
    def plans(self) -> Literal["fixed", "dynamic"]:
        """``fixed`` (the checkpoint's plans: pre-trained arm and fixed baseline) or ``dynamic``."""
        return "dynamic" if self.baseline == "dynamic" else "fixed"

    @property
    def from_scratch(self) -> bool:
        """True for both baselines: the checkpoint's weights are not loaded."""
        return self.baseline != "none"

    @property
    def schedule_name(self) -> str:
        """``schedule.name``, or the arm's default: sawtooth with fixed plans, poly with dynamic plans."""
        return self.schedule.name if self.schedule.name is not None else DEFAULT_SCHEDULE[self.baseline]

    def peak_lr(self) -> float:
        """``lr``, or 1e-3 with pre-trained weights and 1e-2 for the baselines (nnssl fork, nnU-Net)."""
        if self.lr is not None:
            return self.lr
        return SCRATCH_LR if self.from_scratch else PRETRAINED_LR

    def resolved_deep_supervision(self) -> bool:
        """``deep_supervision``, or on for the dynamic baseline (nnU-Net) and off otherwise (nnssl fork)."""
        if self.deep_supervision is not None:
            return self.deep_supervision
        return self.baseline == "dynamic"

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda`` (``auto`` picks cuda when available; see :func:`resolve_device`)."""
        return resolve_device(self.device)

    def resolved_workers(self) -> tuple[int, int, int]:
        """(DA workers, export workers, preprocessing workers) for this machine and device."""
        cpus = os.cpu_count() or 1
        on_cpu = self.resolved_device() == "cpu"
        da = self.da_workers if self.da_workers is not None else (0 if on_cpu else max(1, min(12, cpus - 1)))
        export = self.export_workers if self.export_workers is not None else (1 if on_cpu else min(8, cpus))
        prep = self.preprocess_workers if self.preprocess_workers is not None else min(4, cpus)
        return da, export, prep
