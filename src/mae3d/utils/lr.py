"""Learning-rate formulas shared by pre-training and fine-tuning, evaluated once per epoch.

Both stages step their learning rate at the start of every epoch, as nnU-Net and nnssl do. The
registered schedules (:mod:`mae3d.pretraining.schedules`, :mod:`mae3d.finetuning.schedules`) are
compositions of the two formulas here; keeping them in one place makes "poly" and "linear warm-up"
mean the same in both stages.

* :func:`poly` is nnU-Net's ``PolyLRScheduler`` (``peak * (1 - t / T) ** exponent``), optionally
  shifted to start at epoch ``start`` (the nnssl fine-tuning fork's ``PolyLRScheduler_offset``);
  it reaches 0 at ``end``, one past its last epoch.
* :func:`linear_warmup` is the fork's ``Lin_incr_LRScheduler`` / ``Lin_incr_offset_LRScheduler``:
  ``peak * (t + 1) / length``, i.e. the peak is reached in the *last* warm-up epoch, not after it.
"""

from __future__ import annotations

__all__ = ["POLY_EXPONENT", "linear_warmup", "poly"]

#: nnU-Net's poly exponent
POLY_EXPONENT = 0.9


def linear_warmup(peak: float, epoch: int, *, start: int = 0, length: int) -> float:
    """``peak * (epoch - start + 1) / length``: rises linearly to ``peak`` at epoch ``start + length - 1``.

    Raises:
        ValueError: ``length`` < 1.
    """
    if length < 1:
        raise ValueError(f"warm-up length must be >= 1, got {length}")
    return peak * (epoch - start + 1) / length


def poly(peak: float, epoch: int, *, start: int = 0, end: int, exponent: float = POLY_EXPONENT) -> float:
    """nnU-Net's poly decay from ``peak`` at ``start`` to 0 at ``end`` (exclusive).

    ``peak * (1 - (epoch - start) / (end - start)) ** exponent``, clamped to 0 at and after ``end``;
    0 when the decay has no epochs (``end <= start``).
    """
    if end <= start:
        return 0.0
    frac = max(0.0, 1.0 - (epoch - start) / (end - start))
    return peak * frac ** exponent
