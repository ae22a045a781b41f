"""Fine-tuning schedules: learning rate per epoch and which parameter groups train in that epoch.

A schedule is configuration, not a trainer subclass: ``ScheduleConfig.name`` picks one from
``SCHEDULES`` and the trainer asks it, at the start of every epoch, for ``lr_at(epoch)`` and
``trainable(epoch)``. When the trainable set changes the trainer rebuilds its optimizer over exactly
those parameters (frozen ones get ``requires_grad=False`` and are not in the optimizer); whether
momentum survives that change is ``ScheduleConfig.reset_momentum`` (see
:mod:`mae3d.finetuning.trainer`).

This module holds only the phases; the formulas are :func:`mae3d.utils.lr.linear_warmup` and
:func:`mae3d.utils.lr.poly`, shared with pre-training. It reads its options through the
:class:`ScheduleOptions` protocol and does not import :mod:`mae3d.finetuning.config` (which imports
this module to validate schedule names).

Parameter groups (see :func:`mae3d.finetuning.network.parameter_groups`):

* ``encoder``: stem + encoder stages, the pre-trained part (includes the input projection);
* ``in_proj``: the stem's input convolution, trainable while the encoder is frozen only when its
  weights were adapted to a different number of input channels (nnssl fork behaviour);
* ``decoder``: everything else of the U-Net (transposed convs, decoder blocks, segmentation heads);
* ``probe``: the linear-probe head (only in the ``linear-probe`` network).

Schedules (epochs ``e`` count from 0; ``E`` = number of epochs; ``P`` = peak lr; poly decay
``P * (1 - (e - s) / (E' - s)) ** 0.9`` reaches 0 at ``E'``, one past its last epoch, like nnU-Net):

* ``sawtooth`` decoder (+adapted in-proj) only: warm-up over ``d_w`` epochs, poly to 0 over ``d_p``;
  then whole network: warm-up over ``f_w``, poly to ``E`` (the paper's final two-stage schedule,
  nnssl fork ``PretrainedTrainer_sawtooth``: 25 / 25 / 50 of 1000 epochs).
* ``warmup``   whole network; ``P * (e + 1) / W`` for ``e < W``, then poly from ``W`` to ``E``
  (nnssl fork ``PretrainedTrainer``; W = ``warmup_epochs``).
* ``frozen``   decoder (+adapted in-proj) only, the encoder stays frozen; lr as ``warmup``.
* ``linear-probe`` only the linear probe head trains (on frozen encoder features); lr as ``warmup``.
* ``poly``     whole network, nnU-Net's default poly from epoch 0 (the dynamic baseline's default).
* ``none``     whole network, constant ``P``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

from mae3d.utils.lr import linear_warmup, poly
from mae3d.utils.registry import Registry

__all__ = [
    "ALL_UNET",
    "GROUPS",
    "SCHEDULES",
    "Schedule",
    "ScheduleOptions",
    "make_schedule",
]

GROUPS: tuple[str, ...] = ("encoder", "in_proj", "decoder", "probe")
ALL_UNET: frozenset[str] = frozenset({"encoder", "in_proj", "decoder"})
_NEW_PARTS: frozenset[str] = frozenset({"decoder", "in_proj"})


class ScheduleOptions(Protocol):
    """The schedule options a :class:`Schedule` reads (``mae3d.finetuning.config.ScheduleConfig``)."""

    warmup_epochs: int
    decoder_warmup_epochs: int
    decoder_poly_epochs: int
    full_warmup_epochs: int
    poly_exponent: float


class Schedule(ABC):
    """Learning rate, trainable parameter groups and phase name as functions of the epoch.

    Args:
        cfg: schedule options (phase lengths, poly exponent).
        epochs: total number of training epochs ``E``.
        peak_lr: the peak learning rate ``P``.
    """

    #: network head the schedule trains: "unet" (the U-Net's own decoder) or "linear_probe"
    head: ClassVar[str] = "unet"
    #: registered name (set by :func:`make_schedule`; for messages)
    name: str = ""

    def __init__(self, cfg: ScheduleOptions, *, epochs: int, peak_lr: float) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.cfg = cfg
        self.epochs = epochs
        self.peak_lr = peak_lr

    @abstractmethod
    def lr_at(self, epoch: int) -> float:
        """Learning rate used throughout ``epoch``."""

    @abstractmethod
    def trainable(self, epoch: int) -> frozenset[str]:
        """Parameter groups (subset of ``GROUPS``) that train in ``epoch``."""

    def phase(self, epoch: int) -> str:
        """Name of the phase ``epoch`` belongs to (logs, tests; one phase unless overridden)."""
        return "train"

    # ---- building blocks ----

    def _warmup(self, epoch: int, start: int, length: int) -> float:
        return linear_warmup(self.peak_lr, epoch, start=start, length=length)

    def _poly(self, epoch: int, start: int, end: int) -> float:
        return poly(self.peak_lr, epoch, start=start, end=end, exponent=self.cfg.poly_exponent)

    def _warmup_then_poly(self, epoch: int) -> float:
        w = self.cfg.warmup_epochs
        return self._warmup(epoch, 0, w) if epoch < w else self._poly(epoch, w, self.epochs)

    def _warmup_phase(self, epoch: int) -> str:
        return "warmup" if epoch < self.cfg.warmup_epochs else "poly"


SCHEDULES: Registry[type[Schedule]] = Registry("fine-tuning schedule")


@SCHEDULES.register("sawtooth")
class SawtoothSchedule(Schedule):
    """Decoder warm-up + poly with a frozen encoder, then whole-network warm-up + poly (paper, Tab. 3).

    Phases (epochs ``[0, a)``, ``[a, b)``, ``[b, c)``, ``[c, E)``): ``decoder_warmup``,
    ``decoder_poly``, ``full_warmup``, ``full_poly``. Every phase is a pure function of the epoch,
    so a run resumed at any epoch is in the same phase as an uninterrupted one (nnssl's
    ``PretrainedTrainer_sawtooth.get_stage`` cannot return its whole-network warm-up when both
    warm-ups last 50 epochs, which breaks its resume there).
    """

    def _bounds(self) -> tuple[int, int, int]:
        a = self.cfg.decoder_warmup_epochs
        b = a + self.cfg.decoder_poly_epochs
        return a, b, b + self.cfg.full_warmup_epochs

    def phase(self, epoch: int) -> str:
        a, b, c = self._bounds()
        if epoch < a:
            return "decoder_warmup"
        if epoch < b:
            return "decoder_poly"
        return "full_warmup" if epoch < c else "full_poly"

    def lr_at(self, epoch: int) -> float:
        a, b, c = self._bounds()
        phase = self.phase(epoch)
        if phase == "decoder_warmup":
            return self._warmup(epoch, 0, a)
        if phase == "decoder_poly":
            return self._poly(epoch, a, b)
        if phase == "full_warmup":
            return self._warmup(epoch, b, c - b)
        return self._poly(epoch, c, self.epochs)

    def trainable(self, epoch: int) -> frozenset[str]:
        return _NEW_PARTS if self.phase(epoch).startswith("decoder") else ALL_UNET


@SCHEDULES.register("warmup")
class WarmupSchedule(Schedule):
    """Whole network: linear warm-up over ``warmup_epochs``, then poly decay (nnssl fork default)."""

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return ALL_UNET

    def phase(self, epoch: int) -> str:
        return self._warmup_phase(epoch)


@SCHEDULES.register("frozen")
class FrozenEncoderSchedule(Schedule):
    """Encoder frozen throughout; decoder (+adapted in-proj) with warm-up + poly."""

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return _NEW_PARTS

    def phase(self, epoch: int) -> str:
        return self._warmup_phase(epoch)


@SCHEDULES.register("linear-probe")
class LinearProbeSchedule(Schedule):
    """Only a linear head on the frozen encoder's features trains (see ``network.LinearProbeNet``)."""

    head = "linear_probe"

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return frozenset({"probe"})

    def phase(self, epoch: int) -> str:
        return self._warmup_phase(epoch)


@SCHEDULES.register("poly")
class PolySchedule(Schedule):
    """nnU-Net's default (``nnUNetTrainer``'s ``PolyLRScheduler``): whole network, poly from epoch 0."""

    def lr_at(self, epoch: int) -> float:
        return self._poly(epoch, 0, self.epochs)

    def trainable(self, epoch: int) -> frozenset[str]:
        return ALL_UNET


@SCHEDULES.register("none")
class ConstantSchedule(Schedule):
    """Whole network at a constant learning rate."""

    def lr_at(self, epoch: int) -> float:
        return self.peak_lr

    def trainable(self, epoch: int) -> frozenset[str]:
        return ALL_UNET


def make_schedule(name: str, cfg: ScheduleOptions, *, epochs: int, peak_lr: float) -> Schedule:
    """Instantiate the schedule registered as ``name`` (unknown names list the valid ones).

    ``name`` is passed separately from the options because its default depends on the run (see
    ``FinetuneConfig.schedule_name``).
    """
    schedule = SCHEDULES.get(name)(cfg, epochs=epochs, peak_lr=peak_lr)
    schedule.name = name
    return schedule
