"""Spark-3D ("S3D"): MAE with sparse-conv emulation, mask tokens and densify convs (Wald et al. 2025).

Pipeline per forward:

1. zero-fill the masked input blocks (``zero_input``; the reference feeds raw intensities, which
   leak one voxel into the visible border through the stem's 3^3 receptive field);
2. the network's own encoder, walked sparsely (:mod:`mae3d.pretraining.sparse`): conv/pool outputs
   masked (``sparse_conv``), InstanceNorm over visible voxels (``sparse_norm``);
3. per encoder stage ("densify"): a sparse InstanceNorm without affine parameters (``densify``;
   ``densify_affine`` adds them), a learnable mask token per
   stage filling the masked positions (``mask_token``), and a 3^3 conv C->C with bias at every
   resolution except the highest (``densify``; identity at stage 0);
4. the network's ordinary dense decoder with skips -> reconstruction; MSE on masked voxels
   (defaced voxels, if a defacing mask is given, are zeroed in the input and left out).

Each component is a switch, so the paper's ablation (base MAE -> +sparse conv/norm -> +mask token
-> +densify) runs by configuration; with every switch off except ``zero_input`` S3D is exactly
the dense MAE. The mask token, densify norms and convs live in this module, not in ``network``, so
``network.state_dict()`` keeps nnU-Net's keys and no weight exists twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mae3d.pretraining.methods.base import (
    METHODS,
    LossOn,
    MethodOutput,
    SSLMethod,
    check_inputs,
    keep_mask,
    reconstruction_loss,
)
from mae3d.pretraining.sparse import MaskPyramid, Probe, masked_instance_norm, sparse_encoder_forward

__all__ = ["S3D", "S3DConfig"]


@dataclass
class S3DConfig:
    """S3D switches (defaults: full S3D as in the paper) and loss."""

    sparse_conv: bool = True  #: mask conv/pool outputs in the encoder
    sparse_norm: bool = True  #: encoder InstanceNorm statistics over visible voxels only
    mask_token: bool = True  #: learnable per-stage token at masked positions before decoding
    densify: bool = True  #: densify norm + 3^3 conv per stage (identity conv at full resolution)
    #: learnable scale/shift in the densify norms. Off like nnssl's SparK3D, whose densify norm is a
    #: ``SparseInstanceNorm3d(C)`` built with InstanceNorm's default ``affine=False`` (the encoder's
    #: own norms keep their affine parameters either way)
    densify_affine: bool = False
    zero_input: bool = True  #: zero the masked input voxels (no leakage into the stem)
    loss: LossOn = "masked"
    #: mask tokens ~ trunc-normal(0, std) truncated at +-std, like the reference
    token_init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.token_init_std < 0:
            raise ValueError(f"token_init_std must be >= 0, got {self.token_init_std}")


@METHODS.register("s3d")
class S3D(SSLMethod):
    """Spark-3D around a plain ``ResidualEncoderUNet`` (see module docstring)."""

    Config = S3DConfig

    def __init__(self, network: nn.Module, cfg: S3DConfig | None = None) -> None:
        cfg = cfg or S3DConfig()
        super().__init__(network, cfg)
        encoder = network.encoder
        channels = list(encoder.output_channels)
        self.mask_tokens = None
        if cfg.mask_token:
            self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1, 1)) for c in channels)
            std = cfg.token_init_std
            for token in self.mask_tokens:
                if std > 0:
                    nn.init.trunc_normal_(token, std=std, a=-std, b=std)
        self.densify_norms = None
        self.densify_convs = None
        if cfg.densify:
            norm_op, conv_op = encoder.norm_op, encoder.conv_op
            norm_kwargs = {**(encoder.norm_op_kwargs or {}), "affine": cfg.densify_affine}
            self.densify_norms = nn.ModuleList(norm_op(c, **norm_kwargs) for c in channels)
            self.densify_convs = nn.ModuleList(
                nn.Identity() if i == 0 else conv_op(c, c, kernel_size=3, padding=1, bias=True)
                for i, c in enumerate(channels)
            )

    @property
    def sparse(self) -> bool:
        return self.cfg.sparse_conv or self.cfg.sparse_norm

    def encode(
        self, x_bcdhw: torch.Tensor, masks: MaskPyramid, probe: Probe | None = None
    ) -> list[torch.Tensor]:
        """Encoder stage outputs for an (already zero-filled) input; sparse or dense per the config."""
        if not self.sparse:
            return list(self.network.encoder(x_bcdhw))
        return sparse_encoder_forward(self.network.encoder, x_bcdhw, masks, sparse_conv=self.cfg.sparse_conv,
                                      sparse_norm=self.cfg.sparse_norm, probe=probe)

    def densify(self, skips: list[torch.Tensor], masks: MaskPyramid) -> list[torch.Tensor]:
        """Densify norm -> mask token -> densify conv per stage; returns the decoder's skip list."""
        out = []
        for i, feat in enumerate(skips):
            m = masks.at(feat.shape[2:], feat.dtype)
            if self.densify_norms is not None:
                norm = self.densify_norms[i]
                if m is not None and self.cfg.sparse_norm:
                    # stage outputs end in a sparse norm (+ masked residual): already 0 at masked voxels
                    feat = masked_instance_norm(feat, m, masks.count(feat.shape[2:]), norm.weight, norm.bias,
                                                norm.eps, input_masked=True)
                else:
                    feat = norm(feat)
            if self.mask_tokens is not None and m is not None:
                # lerp(token, feat, m): exactly feat where visible (m=1), exactly the token where masked
                feat = torch.lerp(self.mask_tokens[i].to(feat.dtype), feat, m)
            if self.densify_convs is not None:
                feat = self.densify_convs[i](feat)
            out.append(feat)
        return out

    def forward(
        self, x_bcdhw: torch.Tensor, mask_b1ghw: torch.Tensor, defaced_b1dhw: torch.Tensor | None = None,
        probe: Probe | None = None,
    ) -> MethodOutput:
        """Reconstruct ``x_bcdhw`` from its visible blocks (``mask_b1ghw``: bool, True = visible).

        ``defaced_b1dhw`` (non-zero = defaced) is zeroed in the input (also with ``zero_input``
        off) and excluded from the loss.
        """
        masks = MaskPyramid(check_inputs(x_bcdhw, mask_b1ghw))
        keep_b1dhw = keep_mask(x_bcdhw, defaced_b1dhw)
        visible_b1dhw = masks.at(x_bcdhw.shape[2:], x_bcdhw.dtype)
        assert visible_b1dhw is not None  # the grid divides the patch (check_inputs)
        x_in = x_bcdhw * visible_b1dhw if self.cfg.zero_input else x_bcdhw
        if keep_b1dhw is not None:
            x_in = x_in * keep_b1dhw
        skips = self.encode(x_in, masks, probe)
        pred_bcdhw = self.network.decoder(self.densify(skips, masks))
        if isinstance(pred_bcdhw, (list, tuple)):  # deep supervision: full resolution first
            pred_bcdhw = pred_bcdhw[0]
        loss = reconstruction_loss(pred_bcdhw, x_bcdhw, visible_b1dhw, self.cfg.loss, keep_b1dhw)
        return MethodOutput(loss=loss, reconstruction_bcdhw=pred_bcdhw)
