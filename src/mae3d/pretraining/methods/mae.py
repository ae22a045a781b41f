"""Plain MAE for CNNs (the paper's "base MAE"): zero the masked blocks, run the dense U-Net.

The loss is the MSE against the unmasked input on masked voxels (or on all voxels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mae3d.pretraining.masking import upsample_mask
from mae3d.pretraining.methods.base import (
    METHODS,
    LossOn,
    MethodOutput,
    SSLMethod,
    check_inputs,
    keep_mask,
    reconstruction_loss,
)

__all__ = ["MAE", "MAEConfig"]


@dataclass
class MAEConfig:
    """Options of the dense MAE."""

    #: "masked": MSE on masked voxels only (paper); "all": on every voxel
    loss: LossOn = "masked"


@METHODS.register("mae")
class MAE(SSLMethod):
    """Dense masked auto-encoder: ``network(x * mask)``; nothing but the plain network is trained."""

    Config = MAEConfig

    def __init__(self, network: nn.Module, cfg: MAEConfig | None = None) -> None:
        super().__init__(network, cfg or MAEConfig())

    def forward(self, x_bcdhw: torch.Tensor, mask_b1ghw: torch.Tensor,
                defaced_b1dhw: torch.Tensor | None = None) -> MethodOutput:
        """Reconstruct ``x_bcdhw`` from its visible blocks (``mask_b1ghw``: bool, True = visible).

        ``defaced_b1dhw`` (non-zero = defaced) is zeroed in the input and excluded from the loss.
        """
        mask_b1ghw = check_inputs(x_bcdhw, mask_b1ghw)
        keep_b1dhw = keep_mask(x_bcdhw, defaced_b1dhw)
        visible_b1dhw = upsample_mask(mask_b1ghw, x_bcdhw.shape[2:], x_bcdhw.dtype)
        x_in = x_bcdhw * visible_b1dhw
        if keep_b1dhw is not None:
            x_in = x_in * keep_b1dhw
        pred_bcdhw = self.network(x_in)
        if isinstance(pred_bcdhw, (list, tuple)):  # deep supervision: full resolution first
            pred_bcdhw = pred_bcdhw[0]
        loss = reconstruction_loss(pred_bcdhw, x_bcdhw, visible_b1dhw, self.cfg.loss, keep_b1dhw)
        return MethodOutput(loss=loss, reconstruction_bcdhw=pred_bcdhw)
