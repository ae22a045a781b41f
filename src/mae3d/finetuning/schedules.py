"""Fine-tuning schedules: learning rate per epoch and which parameter groups train in that epoch.

A schedule is configuration, not a trainer subclass: ``ScheduleConfig.name`` picks one from
``SCHEDULES`` and the trainer asks it, at the start of every epoch, for ``lr_at(epoch)`` and
``trainable(epoch)``. When the trainable set changes the trainer rebuilds its optimizer over exactly
those parameters (frozen ones get ``requires_grad=False`` and are not in the optimizer).

Parameter groups (see :func:`mae3d.finetuning.network.parameter_groups`):

* ``encoder``: stem + encoder stages, the pre-trained part (includes the input projection);
* ``in_proj``: the stem's input convolution, trainable while the encoder is frozen only when its
  weights were adapted to a different number of input channels (nnssl fork behaviour);
* ``decoder``: everything else of the U-Net (transposed convs, decoder blocks, segmentation heads);
* ``probe``: the linear-probe head (only in the ``linear-probe`` network).

Schedules (epochs ``e`` count from 0; ``E`` = number of epochs; ``P`` = peak lr; poly decay
``P * (1 - (e - s) / (E' - s)) ** 0.9`` reaches 0 at ``E'``, one past its last epoch, like nnU-Net):

* ``warmup``   whole network; ``P * (e + 1) / W`` for ``e < W``, then poly from ``W`` to ``E``
  (nnssl ``PretrainedTrainer``; W = ``warmup_epochs``).
* ``sawtooth`` decoder (+adapted in-proj) only: warm-up over ``d_w`` epochs, poly to 0 over ``d_p``;
  then whole network: warm-up over ``f_w``, poly to ``E`` (paper's final two-stage schedule).
* ``frozen``   decoder (+adapted in-proj) only, the encoder stays frozen; lr as ``warmup``.
* ``linear-probe`` only the linear probe head trains (on frozen encoder features); lr as ``warmup``.
* ``poly``     whole network, nnU-Net's default poly from epoch 0 (the dynamic baseline's default).
* ``none``     whole network, constant ``P``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mae3d.finetuning.config import ScheduleConfig
from mae3d.utils.registry import Registry

__all__ = [
    "ALL_UNET",
    "GROUPS",
    "SCHEDULES",
    "Schedule",
    "make_schedule",
]

GROUPS: tuple[str, ...] = ("encoder", "in_proj", "decoder", "probe")
ALL_UNET: frozenset[str] = frozenset({"encoder", "in_proj", "decoder"})
_NEW_PARTS: frozenset[str] = frozenset({"decoder", "in_proj"})


class Schedule(ABC):
    """Learning rate and trainable parameter groups as functions of the epoch.

    Args:
        cfg: schedule options (phase lengths, poly exponent).
        epochs: total number of training epochs ``E``.
        peak_lr: the peak learning rate ``P``.
    """

    #: network head the schedule trains: "unet" (the U-Net's own decoder) or "linear_probe"
    head: ClassVar[str] = "unet"

    def __init__(self, cfg: ScheduleConfig, *, epochs: int, peak_lr: float) -> None:
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

    # ---- building blocks ----

    def _warmup(self, epoch: int, start: int, length: int) -> float:
        """Linear warm-up reaching the peak in the last warm-up epoch: ``P * (e - start + 1) / length``."""
        return self.peak_lr * (epoch - start + 1) / length

    def _poly(self, epoch: int, start: int, end: int) -> float:
        """nnU-Net's poly decay from the peak at ``start`` to 0 at ``end`` (exclusive)."""
        if end <= start:
            return 0.0
        frac = max(0.0, 1.0 - (epoch - start) / (end - start))
        return self.peak_lr * frac ** self.cfg.poly_exponent

    def _warmup_then_poly(self, epoch: int) -> float:
        w = self.cfg.warmup_epochs
        return self._warmup(epoch, 0, w) if epoch < w else self._poly(epoch, w, self.epochs)


SCHEDULES: Registry[type[Schedule]] = Registry("fine-tuning schedule")


@SCHEDULES.register("warmup")
class WarmupSchedule(Schedule):
    """Whole network: linear warm-up over ``warmup_epochs``, then poly decay (nnssl default)."""

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return ALL_UNET


@SCHEDULES.register("sawtooth")
class SawtoothSchedule(Schedule):
    """Decoder warm-up + poly with a frozen encoder, then whole-network warm-up + poly (paper, Tab. 3)."""

    def _bounds(self) -> tuple[int, int, int]:
        a = self.cfg.decoder_warmup_epochs
        b = a + self.cfg.decoder_poly_epochs
        return a, b, b + self.cfg.full_warmup_epochs

    def lr_at(self, epoch: int) -> float:
        a, b, c = self._bounds()
        if epoch < a:
            return self._warmup(epoch, 0, a)
        if epoch < b:
            return self._poly(epoch, a, b)
        if epoch < c:
            return self._warmup(epoch, b, c - b)
        return self._poly(epoch, c, self.epochs)

    def trainable(self, epoch: int) -> frozenset[str]:
        _, b, _ = self._bounds()
        return _NEW_PARTS if epoch < b else ALL_UNET


@SCHEDULES.register("frozen")
class FrozenEncoderSchedule(Schedule):
    """Encoder frozen throughout; decoder (+adapted in-proj) with warm-up + poly."""

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return _NEW_PARTS


@SCHEDULES.register("linear-probe")
class LinearProbeSchedule(Schedule):
    """Only a linear head on the frozen encoder's features trains (see ``network.LinearProbeNet``)."""

    head = "linear_probe"

    def lr_at(self, epoch: int) -> float:
        return self._warmup_then_poly(epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return frozenset({"probe"})


@SCHEDULES.register("poly")
class PolySchedule(Schedule):
    """nnU-Net's default: whole network, poly decay from the peak at epoch 0."""

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


def make_schedule(cfg: ScheduleConfig, *, epochs: int, peak_lr: float) -> Schedule:
    """Instantiate the schedule named ``cfg.name`` (unknown names list the valid ones)."""
    return SCHEDULES.get(cfg.name)(cfg, epochs=epochs, peak_lr=peak_lr)
