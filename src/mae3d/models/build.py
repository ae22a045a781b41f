"""Build nnU-Net's ResidualEncoderUNet from an architecture config, and describe it serialisably.

The network is dynamic_network_architectures' own ``ResidualEncoderUNet`` (imported from its
``architectures.unet`` module directly: the package's Primus module needs timm, which cannot be
imported beside this torch). So state-dict keys are exactly nnU-Net's, and a pre-trained
checkpoint loads into nnU-Net without renaming.

:func:`describe` gives the same ``network_class_name`` / ``arch_kwargs`` / ``_kw_requires_import``
triple that nnU-Net plans (and nnssl adaptation plans) store, plus the encoder/stem key map.
:func:`build_network` builds from that description, so the description is the single source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from mae3d.models.allowlist import resolve_class
from mae3d.models.description import canonical_architecture, resolved_arch_kwargs
from mae3d.models.spec import ArchitectureConfig, ArchitectureError, ArchitectureSpec, resolve

__all__ = [
    "KEYS_TO_IN_PROJ",
    "KEY_TO_ENCODER",
    "KEY_TO_STEM",
    "NETWORK_CLASS_NAME",
    "build_network",
    "count_parameters",
    "describe",
    "encoder_state_keys",
    "init_weights",
    "network_from_description",
]

NETWORK_CLASS_NAME = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
#: state-dict prefixes of what is transferred downstream (nnssl AdaptationPlan field names)
KEY_TO_ENCODER = "encoder.stages"
KEY_TO_STEM = "encoder.stem"
#: the stem conv is registered twice in DNA's ConvDropoutNormReLU (``.conv`` and ``.all_modules.0``)
KEYS_TO_IN_PROJ = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
KW_REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")


def describe(
    arch: ArchitectureConfig | ArchitectureSpec | str,
    in_channels: int = 1,
    out_channels: int = 1,
    deep_supervision: bool = False,
) -> dict[str, Any]:
    """JSON-serialisable description of the network (nnU-Net plans / nnssl adaptation-plan style).

    Keys: ``arch_class_name`` ("ResidualEncoderUNet"), ``network_class_name`` (dotted),
    ``arch_kwargs`` (classes as dotted strings, exactly what nnU-Net's ResEnc planner writes),
    ``_kw_requires_import``, ``input_channels``, ``num_classes``, ``deep_supervision``, ``preset``,
    ``init``, and the key map ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``.
    """
    spec = resolve(arch)
    arch_kwargs = {
        "n_stages": spec.n_stages,
        "features_per_stage": list(spec.features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(k) for k in spec.kernel_sizes],
        "strides": [list(s) for s in spec.strides],
        "n_blocks_per_stage": list(spec.blocks),
        "n_conv_per_stage_decoder": list(spec.decoder_convs),
        "conv_bias": spec.conv_bias,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return {
        "arch_class_name": "ResidualEncoderUNet",
        "network_class_name": NETWORK_CLASS_NAME,
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": list(KW_REQUIRES_IMPORT),
        "input_channels": int(in_channels),
        "num_classes": int(out_channels),
        "deep_supervision": bool(deep_supervision),
        "preset": spec.name,
        "init": spec.init,
        "key_to_encoder": KEY_TO_ENCODER,
        "key_to_stem": KEY_TO_STEM,
        "keys_to_in_proj": list(KEYS_TO_IN_PROJ),
    }


def network_from_description(
    desc: Mapping[str, Any],
    in_channels: int | None = None,
    out_channels: int | None = None,
    deep_supervision: bool | None = None,
    init: str | None = None,
    *,
    source: str | None = None,
) -> nn.Module:
    """Instantiate the network an architecture description names: the one builder in mae3d.

    ``desc`` is a :func:`describe` dict, an nnU-Net plans ``architecture`` entry or a checkpoint's
    ``architecture`` (see :mod:`mae3d.models.description`); any allowlisted network class works
    (ResidualEncoderUNet, PlainConvUNet). Class names are resolved through
    :mod:`mae3d.models.allowlist`, never imported by name. ``in_channels``, ``out_channels``,
    ``deep_supervision`` and ``init`` override the description's ``input_channels``, ``num_classes``,
    ``deep_supervision`` and ``init`` (defaults 1, 1, False, ``"pytorch"``).

    Raises:
        ArchitectureError: malformed description, or the class rejects its arguments (names ``source``).
        UnsafeClassError: a class name that is not on the allowlist.
    """
    if "network_class_name" not in desc and "arch_class_name" in desc:  # bare nnssl-style name only
        desc = {**desc, "network_class_name": desc["arch_class_name"]}
    if "_kw_requires_import" not in desc and isinstance(desc.get("arch_kwargs"), Mapping):
        desc = {**desc, "_kw_requires_import": [k for k in KW_REQUIRES_IMPORT if k in desc["arch_kwargs"]]}
    arch = canonical_architecture(desc, source=source)
    cls = resolve_class(arch["network_class_name"], source=source)
    try:
        net = cls(
            input_channels=int(in_channels if in_channels is not None else desc.get("input_channels", 1)),
            num_classes=int(out_channels if out_channels is not None else desc.get("num_classes", 1)),
            deep_supervision=bool(deep_supervision if deep_supervision is not None
                                  else desc.get("deep_supervision", False)),
            **resolved_arch_kwargs(arch, source=source),
        )
    except (TypeError, AssertionError, ValueError) as e:
        where = f"{source}: " if source else ""
        raise ArchitectureError(f"{where}cannot build {arch['network_class_name']}: {e}") from e
    init_weights(net, init if init is not None else desc.get("init", "pytorch"))
    return net


def build_network(
    arch: ArchitectureConfig | ArchitectureSpec | str,
    in_channels: int = 1,
    out_channels: int = 1,
    deep_supervision: bool = False,
) -> ResidualEncoderUNet:
    """Build the plain nnU-Net ``ResidualEncoderUNet`` for ``arch`` (a preset name, config or spec).

    Initialisation follows ``arch.init`` (see :func:`init_weights`).
    """
    return network_from_description(describe(arch, in_channels, out_channels, deep_supervision))


def init_weights(net: nn.Module, scheme: str) -> None:
    """Initialise ``net`` in place.

    ``"pytorch"`` keeps PyTorch's default init (what nnssl pre-training starts from);
    ``"he"`` applies the network's own ``initialize`` (nnU-Net: InitWeights_He(1e-2) on convs,
    zero biases, and zero-init of the last norm of every residual block).
    """
    if scheme == "pytorch":
        return
    if scheme == "he":
        net.apply(net.initialize)
        return
    raise ValueError(f"init: expected 'pytorch' or 'he', got {scheme!r}")


def encoder_state_keys(net: nn.Module) -> list[str]:
    """State-dict keys of stem + encoder stages: exactly what is transferred to a downstream model."""
    prefixes = (KEY_TO_STEM + ".", KEY_TO_ENCODER + ".")
    return [k for k in net.state_dict() if k.startswith(prefixes)]


def count_parameters(net: nn.Module) -> int:
    """Number of distinct parameter elements (aliases such as ``.conv``/``.all_modules.0`` count once)."""
    return sum(p.numel() for p in net.parameters())
