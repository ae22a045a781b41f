"""Build the fine-tuning network from nnU-Net plans (allowlisted classes only) and split its parameters.

The plans' ``architecture`` entry (``network_class_name`` + ``arch_kwargs`` + ``_kw_requires_import``)
is instantiated by :func:`mae3d.models.network_from_description` (mae3d's one builder, which resolves
class names through mae3d's allowlist instead of nnU-Net's ``pydoc.locate``) with nnU-Net's
initialisation (``init="he"``: He init, zero-init of the last norm of each residual block). Both the
trainer and :mod:`mae3d.evaluation.predict` build networks here, so inference rebuilds exactly what
was trained.

A plans configuration may set ``"mae3d_head": "linear_probe"`` to get a :class:`LinearProbeNet`
instead of the full U-Net (the ``linear-probe`` schedule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mae3d.models import KEY_TO_ENCODER, KEY_TO_STEM, KEYS_TO_IN_PROJ, network_from_description
from mae3d.transfer.load import unwrap

__all__ = [
    "DEFAULT_KEYS",
    "LinearProbeNet",
    "build_from_plans",
    "parameter_groups",
]

#: stem / encoder / input-projection module names of dynamic_network_architectures' ResidualEncoderUNet
#: (nnU-Net's dynamic plans); a checkpoint's own ``keys`` take precedence
DEFAULT_KEYS: dict[str, Any] = {"stem": KEY_TO_STEM, "encoder": KEY_TO_ENCODER,
                                "in_proj": list(KEYS_TO_IN_PROJ)}


class LinearProbeNet(nn.Module):
    """Linear probe for segmentation: one linear map of the frozen encoder's multi-scale features.

    Every encoder stage output ``f_s`` (C_s channels at 1/stride_s resolution) gets a 1x1x1 conv to
    the class logits; the per-stage logits are upsampled (trilinear) to the input size and summed.
    Because trilinear upsampling is linear per channel and commutes with a 1x1x1 conv, this equals a
    single 1x1x1 conv over the concatenated, upsampled "hypercolumn" of all stages (e.g. 1120 channels
    for ResEnc-L) - a true linear probe of everything the encoder computes - without materialising
    that hypercolumn at full resolution. Only stage 0 carries a bias (one bias suffices for a sum).

    The encoder keeps its U-Net module path (``encoder.stem``, ``encoder.stages``), so the pre-trained
    stem + encoder load into it unchanged; the heads live under ``probe``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        conv_op = encoder.conv_op
        self.probe = nn.ModuleList(conv_op(c, num_classes, kernel_size=1, bias=(i == 0))
                                   for i, c in enumerate(encoder.output_channels))

    def forward(self, x_bcdhw: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(x_bcdhw)
        size = x_bcdhw.shape[2:]
        mode = "trilinear" if x_bcdhw.ndim == 5 else "bilinear"
        logits = None
        for head, feat in zip(self.probe, skips, strict=True):
            y = head(feat)
            if y.shape[2:] != size:
                y = F.interpolate(y, size=size, mode=mode, align_corners=False)
            logits = y if logits is None else logits + y
        return logits


def build_from_plans(configuration: Mapping[str, Any], num_input_channels: int, num_output_channels: int, *,
                     deep_supervision: bool, source: str | None = None) -> nn.Module:
    """Instantiate and initialise the network of one plans configuration.

    Args:
        configuration: ``plans["configurations"][name]`` (resolved; needs ``architecture``).
        num_input_channels: image channels.
        num_output_channels: segmentation heads (``label_manager.num_segmentation_heads``).
        deep_supervision: build deep-supervision outputs (ignored by the linear probe).
        source: plans file, for error messages.
    """
    # init "he" = the network's own initialize(), as nnU-Net's get_network_from_plans(allow_init=True)
    net = network_from_description(configuration["architecture"], num_input_channels, num_output_channels,
                                   deep_supervision, "he", source=source)
    head = configuration.get("mae3d_head", "unet")
    if head == "linear_probe":
        return LinearProbeNet(net.encoder, num_output_channels)
    if head != "unet":
        raise ValueError(f"{source or 'plans'}: unknown mae3d_head {head!r} (valid: unet, linear_probe)")
    return net


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def parameter_groups(network: nn.Module, keys: Mapping[str, Any] | None = None
                     ) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split the (unwrapped) network's parameters into ``encoder``, ``in_proj``, ``decoder``, ``probe``.

    ``in_proj`` holds the stem's input convolution (``keys["in_proj"]``), ``encoder`` the rest of
    ``keys["stem"]`` and ``keys["encoder"]``, ``probe`` a :class:`LinearProbeNet`'s heads and
    ``decoder`` everything else. Each parameter appears once (aliases are deduplicated by
    ``named_parameters``), in the network's parameter order.
    """
    keys = keys or DEFAULT_KEYS
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {
        g: [] for g in ("encoder", "in_proj", "decoder", "probe")}
    for name, p in unwrap(network).named_parameters():
        if _under(name, keys["in_proj"]):
            groups["in_proj"].append((name, p))
        elif _under(name, (keys["stem"], keys["encoder"])):
            groups["encoder"].append((name, p))
        elif _under(name, ("probe",)):
            groups["probe"].append((name, p))
        else:
            groups["decoder"].append((name, p))
    return groups
