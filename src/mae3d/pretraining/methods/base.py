"""Common interface of masked-image-modelling methods, their registry and the reconstruction loss.

A method is an ``nn.Module`` that owns the plain nnU-Net network (``method.network``; its
state-dict keys are nnU-Net's, so ``method.network.state_dict()`` is what a checkpoint transfers)
plus any method-only parameters (mask tokens, densify convs). ``forward(x_bcdhw, mask_b1ghw,
defaced_b1dhw=None)`` returns the loss and the reconstruction; masks are always arguments, never
stored.

Defaced voxels: ``defaced_b1dhw`` is a case's anonymisation (defacing) mask sampled with the patch,
**non-zero = defaced** (the voxel was removed by defacing; nnssl's ``LossMaskMSELoss`` weights the
loss by ``1 - anon`` with the same polarity), 0 = real anatomy. Every method zeroes defaced voxels in
its input and leaves them out of the loss: the defaced face is not anatomy to be reconstructed, and
after z-scoring its zeros are not even zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from mae3d.config import from_dict
from mae3d.pretraining.masking import MaskError
from mae3d.utils.registry import Registry

__all__ = ["METHODS", "LossOn", "MethodOutput", "SSLMethod", "build_method", "check_inputs",
           "keep_mask", "reconstruction_loss"]

LossOn = Literal["masked", "all"]


@dataclass(frozen=True)
class MethodOutput:
    """Result of one forward: scalar ``loss`` (float32) and the network output ``(B, C, D, H, W)``."""

    loss: torch.Tensor
    reconstruction_bcdhw: torch.Tensor


class SSLMethod(nn.Module):
    """Base class: wraps a plain ``ResidualEncoderUNet`` registered as submodule ``network``.

    Subclasses set ``Config`` (a dataclass with defaults = the paper's values) and implement
    :meth:`forward`.
    """

    Config: ClassVar[type] = object
    #: the plain nnU-Net network (the only part transferred downstream); a registered submodule
    network: nn.Module

    def __init__(self, network: nn.Module, cfg: Any) -> None:
        super().__init__()
        self.network = network
        self.cfg = cfg

    def forward(self, x_bcdhw: torch.Tensor, mask_b1ghw: torch.Tensor,
                defaced_b1dhw: torch.Tensor | None = None) -> MethodOutput:  # pragma: no cover
        """Reconstruct ``x_bcdhw`` from its visible blocks (``mask_b1ghw``: bool, True = visible).

        ``defaced_b1dhw`` (optional, non-zero = defaced): voxels zeroed in the input and left out of
        the loss (module docstring).
        """
        raise NotImplementedError


METHODS: Registry[type[SSLMethod]] = Registry("pre-training method")


def check_inputs(x_bcdhw: torch.Tensor, mask_b1ghw: torch.Tensor) -> torch.Tensor:
    """Validate a batch and its grid mask; returns the mask on the batch's device.

    Raises :class:`~mae3d.pretraining.masking.MaskError` for a non-5-D batch, a non-bool mask, a
    batch-size mismatch or a grid that does not divide the patch.
    """
    if x_bcdhw.dim() != 5:
        raise MaskError(f"input must be (B, C, D, H, W), got shape {tuple(x_bcdhw.shape)}")
    if mask_b1ghw.dtype != torch.bool or mask_b1ghw.dim() != 5 or mask_b1ghw.shape[1] != 1:
        got = f"{mask_b1ghw.dtype} {tuple(mask_b1ghw.shape)}"
        raise MaskError(f"mask must be bool (B, 1, G, H, W), got {got}")
    if mask_b1ghw.shape[0] != x_bcdhw.shape[0]:
        raise MaskError(f"mask batch {mask_b1ghw.shape[0]} != input batch {x_bcdhw.shape[0]}")
    if any(s % g for s, g in zip(x_bcdhw.shape[2:], mask_b1ghw.shape[2:], strict=True)):
        raise MaskError(f"mask grid {tuple(mask_b1ghw.shape[2:])} does not divide the patch "
                        f"{tuple(x_bcdhw.shape[2:])}")
    return mask_b1ghw.to(x_bcdhw.device, non_blocking=True)


def keep_mask(x_bcdhw: torch.Tensor, defaced_b1dhw: torch.Tensor | None) -> torch.Tensor | None:
    """``1 - defaced`` as a ``(B, 1, D, H, W)`` float mask in ``x``'s dtype on its device (None if None).

    Raises :class:`~mae3d.pretraining.masking.MaskError` if the shape is not ``(B, 1, *x's space)``.
    """
    if defaced_b1dhw is None:
        return None
    want = (x_bcdhw.shape[0], 1, *x_bcdhw.shape[2:])
    if tuple(defaced_b1dhw.shape) != want:
        raise MaskError(f"defaced mask must have shape {want}, got {tuple(defaced_b1dhw.shape)}")
    return (defaced_b1dhw.to(x_bcdhw.device, non_blocking=True) == 0).to(x_bcdhw.dtype)


def build_method(name: str, network: nn.Module, cfg: Any = None) -> SSLMethod:
    """Instantiate method ``name`` around ``network``.

    ``cfg`` may be None (defaults), a mapping (validated into the method's ``Config`` dataclass by
    :func:`mae3d.config.from_dict`, so unknown keys fail with a clear message) or a ``Config`` instance.
    """
    cls = METHODS.get(name)
    if cfg is None:
        cfg = cls.Config()
    elif isinstance(cfg, Mapping):
        cfg = from_dict(cls.Config, cfg)
    elif not (dataclasses.is_dataclass(cfg) and isinstance(cfg, cls.Config)):
        raise TypeError(
            f"method {name!r}: expected a {cls.Config.__name__} or mapping, got {type(cfg).__name__}"
        )
    return cls(network, cfg)


def reconstruction_loss(
    pred_bcdhw: torch.Tensor, target_bcdhw: torch.Tensor, visible_b1dhw: torch.Tensor, on: LossOn = "masked",
    keep_b1dhw: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between prediction and the unmasked input, in float32.

    ``on="masked"`` (the paper's): mean over masked voxels only (``visible == 0``), pooled over the
    batch like the reference (sum of squared errors / number of masked voxel-channels); 0 if nothing
    is masked. ``on="all"``: mean over every voxel. ``keep_b1dhw`` (1 = use, 0 = defaced; see
    :func:`keep_mask`) removes voxels from both the sum and the count, so a defaced voxel gets no
    gradient and the loss is the mean over the remaining voxels.
    """
    diff = pred_bcdhw.float() - target_bcdhw.float()
    if on not in ("masked", "all"):
        raise ValueError(f"loss: expected 'masked' or 'all', got {on!r}")
    if on == "all" and keep_b1dhw is None:
        return diff.square().mean()
    if on == "all":
        weight = torch.ones_like(visible_b1dhw, dtype=torch.float32)
    else:
        weight = 1.0 - visible_b1dhw.float()
    if keep_b1dhw is not None:
        weight = weight * keep_b1dhw.float()
    denom = weight.sum() * diff.shape[1]
    return (diff.square() * weight).sum() / denom.clamp(min=1.0)
