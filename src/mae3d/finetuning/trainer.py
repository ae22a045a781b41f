"""nnU-Net v2 trainer for fine-tuning: plans-built network, pre-trained stem + encoder, schedules.

:class:`FinetuneTrainer` subclasses nnU-Net's ``nnUNetTrainer`` and keeps its data loading,
augmentation, Dice+CE loss, online validation, checkpointing, progress plot and final validation /
export. It is constructed directly (never looked up by class name: nnU-Net's recursive lookup
imports its Primus trainers -> timm -> torchvision, which crashes beside this torch) and changes:

* the network is built from the plans through mae3d's class allowlist
  (:func:`~mae3d.finetuning.network.build_from_plans`), not ``pydoc.locate``;
* before the first epoch the checkpoint's stem + encoder are loaded with
  :func:`mae3d.transfer.transfer_weights` (input channels adapted) and ``transfer_report.json`` is
  written into the fold folder;
* epochs, iterations, lr, weight decay, momentum, deep supervision and the schedule come from a
  :class:`~mae3d.finetuning.config.FinetuneConfig` via :meth:`configure`; everything else (loss and
  its deep-supervision weights, batch size and foreground oversampling from the plans, gradient
  clipping at 12, AMP on CUDA, augmentation) is nnU-Net's ``nnUNetTrainer`` unchanged;
* the optimizer (SGD, Nesterov, momentum 0.99 as nnU-Net) holds only the parameters the schedule
  trains in the current epoch; frozen ones get ``requires_grad=False`` (no gradients, no optimizer
  state). When the trainable set changes it is rebuilt: with ``schedule.reset_momentum`` (default)
  as a new optimizer, so all momentum restarts from zero (nnssl's ``PretrainedTrainer_sawtooth``);
  without, carrying the momentum of the parameters trainable before and after;
* resuming rebuilds the optimizer of the checkpoint's phase before loading its state (the next
  epoch's phase change then happens exactly as in an uninterrupted run), and loads the
  checkpoint with ``weights_only=True`` via :func:`mae3d.transfer.load_training_checkpoint`
  (nnU-Net's ``load_checkpoint`` uses ``weights_only=False`` and fails on dicts - ``checkpoint`` is
  unbound there - so it is reimplemented here);
* the final validation uses a configurable number of export processes (1 = a thread in this process)
  and, optionally, no test-time mirroring.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mae3d.finetuning.config import FinetuneConfig
from mae3d.finetuning.environment import export_processes, in_process_pools
from mae3d.finetuning.network import build_from_plans, parameter_groups
from mae3d.finetuning.pretrained import PretrainedCheckpoint
from mae3d.finetuning.schedules import Schedule
from mae3d.io.atomic import write_json
from mae3d.transfer import load_training_checkpoint, transfer_weights, unwrap

__all__ = ["FinetuneTrainer", "ScheduleLR", "TrainerSetup", "create_trainer"]


@dataclass(frozen=True)
class TrainerSetup:
    """Everything :class:`FinetuneTrainer` needs beyond nnU-Net's constructor arguments.

    Attributes:
        cfg: the run's configuration.
        schedule: learning rate and trainable groups per epoch.
        pretrained: checkpoint whose stem + encoder are loaded (None: train from scratch).
        keys: stem / encoder / in_proj module names for the parameter groups.
        in_proj_adapted: the dataset has more channels than the checkpoint (in-proj trains with the decoder).
        export_workers: processes of the final validation's export and metric pools.
    """

    cfg: FinetuneConfig
    schedule: Schedule
    pretrained: PretrainedCheckpoint | None
    keys: dict[str, Any]
    in_proj_adapted: bool
    export_workers: int


class ScheduleLR(LRScheduler):
    """Sets every parameter group's lr to ``schedule.lr_at(epoch)`` (nnU-Net calls ``step(epoch)``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, epoch: int = 0) -> None:
        self.schedule = schedule
        self._next_epoch = epoch
        super().__init__(optimizer)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is None:
            epoch = self._next_epoch
        self._next_epoch = epoch + 1
        lr = self.schedule.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)


_CUDA = torch.device("cuda")


class FinetuneTrainer(nnUNetTrainer):
    """nnU-Net trainer for (pre-trained) fine-tuning; call :meth:`configure` before training.

    The constructor has nnU-Net's signature on purpose: nnU-Net records the constructor's arguments
    by introspection (``my_init_kwargs``) and would fail on extra ones.
    """

    def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._setup: TrainerSetup | None = None
        self._active_groups: frozenset[str] | None = None
        self.transfer_report: dict[str, Any] | None = None

    # ---- set-up ---------------------------------------------------------------------------------
    def configure(self, setup: TrainerSetup) -> None:
        """Apply the run's hyper-parameters (before :meth:`initialize`)."""
        if self.was_initialized:
            raise RuntimeError("configure() must be called before the trainer is initialised")
        cfg = setup.cfg
        self._setup = setup
        self.num_epochs = cfg.epochs
        self.num_iterations_per_epoch = cfg.iterations_per_epoch
        self.num_val_iterations_per_epoch = cfg.val_iterations_per_epoch
        self.initial_lr = setup.schedule.peak_lr
        self.weight_decay = cfg.weight_decay
        self.enable_deep_supervision = cfg.resolved_deep_supervision()
        self.save_every = cfg.save_every

    @property
    def setup(self) -> TrainerSetup:
        if self._setup is None:
            raise RuntimeError("FinetuneTrainer.configure() was not called")
        return self._setup

    def initialize(self) -> None:
        _ = self.setup  # fail early when unconfigured
        super().initialize()

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Build the plans' network through mae3d's allowlist (see :mod:`mae3d.finetuning.network`)."""
        return build_from_plans(configuration_manager.configuration, num_input_channels, num_output_channels,
                                deep_supervision=enable_deep_supervision, source=plans_manager.plans_name)

    # ---- optimiser and schedule -----------------------------------------------------------------
    def _trainable_parameters(self, groups: frozenset[str]) -> list[nn.Parameter]:
        """Set ``requires_grad`` by group and return the trainable parameters in network order."""
        effective = set(groups)
        if "encoder" in effective:
            effective.add("in_proj")  # the input projection is part of the encoder
        elif not self.setup.in_proj_adapted:
            effective.discard("in_proj")  # only an adapted in-proj trains with the new parts
        group_of = {id(p): g for g, items in parameter_groups(self.network, self.setup.keys).items()
                    for _, p in items}
        params = []
        for p in unwrap(self.network).parameters():
            on = group_of[id(p)] in effective
            p.requires_grad_(on)
            if on:
                params.append(p)
        if not params:
            raise RuntimeError(f"schedule {self.setup.schedule.name!r} trains no parameter of this "
                               f"network (groups {sorted(groups)})")
        return params

    def _make_optimizer(self, epoch: int) -> tuple[torch.optim.Optimizer, ScheduleLR]:
        schedule = self.setup.schedule
        groups = schedule.trainable(epoch)
        params = self._trainable_parameters(groups)
        optimizer = torch.optim.SGD(params, lr=schedule.lr_at(epoch), weight_decay=self.weight_decay,
                                    momentum=self.setup.cfg.momentum, nesterov=True)
        self._active_groups = groups
        return optimizer, ScheduleLR(optimizer, schedule, epoch)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, ScheduleLR]:
        return self._make_optimizer(self.current_epoch)

    def _switch_phase(self, epoch: int) -> None:
        """Rebuild the optimizer for the trainable set of ``epoch`` (momentum reset or carried over)."""
        old = self.optimizer
        self.optimizer, self.lr_scheduler = self._make_optimizer(epoch)
        reset = self.setup.cfg.schedule.reset_momentum
        if not reset:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p in old.state:  # keep momentum of parameters trainable before and after
                        self.optimizer.state[p] = old.state[p]
        n = sum(p.numel() for g in self.optimizer.param_groups for p in g["params"])
        self.print_to_log_file(f"schedule phase {self.setup.schedule.phase(epoch)!r} from epoch {epoch}: "
                               f"training {sorted(self._active_groups)} ({n} parameters), momentum "
                               f"{'reset' if reset else 'kept'}")

    def on_train_epoch_start(self) -> None:
        if self.setup.schedule.trainable(self.current_epoch) != self._active_groups:
            self._switch_phase(self.current_epoch)
        super().on_train_epoch_start()

    # ---- pre-trained weights --------------------------------------------------------------------
    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        if self.current_epoch == 0 and self.setup.pretrained is not None and self.transfer_report is None:
            self._load_pretrained()
        super().on_train_start()

    def _load_pretrained(self) -> None:
        pre = self.setup.pretrained
        assert pre is not None
        report = transfer_weights(self.network, pre.ckpt)
        self.transfer_report = {
            "checkpoint": str(pre.path.resolve()), "sha256": pre.sha256, "method": pre.pretrain.get("method"),
            "input_channels_adapted": report.input_channels_adapted, **report.to_dict(),
        }
        write_json(Path(self.output_folder) / "transfer_report.json", self.transfer_report)
        self.print_to_log_file(report.format())

    # ---- checkpoints ----------------------------------------------------------------------------
    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """Resume from an nnU-Net checkpoint (file loaded with ``weights_only=True``, or a dict)."""
        ckpt = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            load_training_checkpoint(filename_or_checkpoint, map_location=self.device)
        if not self.was_initialized:
            self.initialize()
        net = unwrap(self.network)
        own = net.state_dict()
        weights = {(k[7:] if k not in own and k.startswith("module.") else k): v
                   for k, v in ckpt["network_weights"].items()}
        net.load_state_dict(weights)
        # the saved optimizer belongs to the phase of the last finished epoch
        self.optimizer, self.lr_scheduler = self._make_optimizer(max(int(ckpt["current_epoch"]) - 1, 0))
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
        self.my_init_kwargs = ckpt["init_args"]
        self.current_epoch = int(ckpt["current_epoch"])
        self.logger.load_checkpoint(ckpt["logging"])
        self._best_ema = ckpt["_best_ema"]
        self.inference_allowed_mirroring_axes = ckpt.get("inference_allowed_mirroring_axes",
                                                         self.inference_allowed_mirroring_axes)

    # ---- nnU-Net hooks that assume its default U-Net or many CPUs ---------------------------------
    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        if hasattr(unwrap(self.network), "decoder"):  # the linear probe has no decoder
            super().set_deep_supervision_enabled(enabled)

    def plot_network_architecture(self) -> None:
        """Skipped: nnU-Net's version needs ``hiddenlayer`` (not installed) and only logs an error."""

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        n = self.setup.export_workers
        axes = self.inference_allowed_mirroring_axes
        if not self.setup.cfg.validation_mirroring:
            self.inference_allowed_mirroring_axes = None  # nnU-Net's predictor then skips mirroring
        try:
            with export_processes(n), in_process_pools(n == 1):
                super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes


def create_trainer(plans: dict[str, Any], configuration: str, fold: int | str, dataset_json: dict[str, Any],
                   device: str, setup: TrainerSetup, *, resume: bool) -> FinetuneTrainer:
    """Construct and configure a :class:`FinetuneTrainer` (``nnUNet_results`` must be set)."""
    plans = copy.deepcopy(plans)
    plans["continue_training"] = resume  # nnU-Net 2.8 pops this from the plans in its constructor
    trainer = FinetuneTrainer(plans, configuration, fold, copy.deepcopy(dataset_json), torch.device(device))
    trainer.configure(setup)
    return trainer
