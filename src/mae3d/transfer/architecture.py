"""Architecture descriptions as stored in checkpoints, and building a network from one.

An architecture is described the way nnU-Net v2 plans do (``configurations[...]["architecture"]``)::

    {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
     "arch_kwargs": {"n_stages": 6, "features_per_stage": [...],
                     "conv_op": "torch.nn.modules.conv.Conv3d", ...},
     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}

so that a mae3d checkpoint's architecture can be pasted into an nnU-Net plans file unchanged. Input
channels, number of output classes and deep supervision are run-time arguments, not part of it.
Class names are only resolved through :mod:`mae3d.transfer.allowlist`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from mae3d.transfer.allowlist import canonical_class_name, resolve_class

__all__ = [
    "ArchitectureError",
    "build_network",
    "canonical_architecture",
    "is_resenc_l",
    "resenc_l_architecture",
    "same_architecture",
]

_RUNTIME_ARGS = ("input_channels", "num_classes", "deep_supervision")
_ARCH_KEYS = ("network_class_name", "arch_kwargs", "_kw_requires_import")


class ArchitectureError(ValueError):
    """An architecture description is malformed or cannot be built."""


def resenc_l_architecture() -> dict[str, Any]:
    """The ResEnc-L preset (nnssl's ``"ResEncL"``, nnssl.md §1.1) as an architecture dict (a fresh copy).

    Taken from :func:`mae3d.models.describe` (``"resenc-l"``): 6 stages, features 32..320, residual
    blocks [1,3,4,6,6,6], 3x3x3 kernels, strides 1 then 2 x5, one decoder conv per stage, conv bias,
    InstanceNorm3d(eps=1e-5, affine), LeakyReLU(inplace), no dropout.
    """
    from mae3d.models import describe  # models does not import transfer: no cycle

    return canonical_architecture(describe("resenc-l"))


def _plain(x: Any) -> Any:
    """Tuples -> lists recursively (JSON and torch weights_only both keep lists)."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _check_shape(arch: Any, source: str | None) -> None:
    where = f"{source}: " if source else ""
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"{where}architecture must be a dict, got {type(arch).__name__}")
    expected = (("network_class_name", str), ("arch_kwargs", Mapping), ("_kw_requires_import", (list, tuple)))
    for key, typ in expected:
        if not isinstance(arch.get(key), typ):
            raise ArchitectureError(f"{where}architecture[{key!r}] is missing or of the wrong type")
    missing = [k for k in arch["_kw_requires_import"] if k not in arch["arch_kwargs"]]
    if missing:
        raise ArchitectureError(f"{where}_kw_requires_import names keys absent from arch_kwargs: {missing}")
    runtime = [k for k in _RUNTIME_ARGS if k in arch["arch_kwargs"]]
    if runtime:
        raise ArchitectureError(f"{where}arch_kwargs must not contain run-time arguments {runtime}")


def canonical_architecture(arch: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """Validate ``arch`` and return a plain copy holding only the three architecture keys.

    Tuples become lists; class-name spellings are kept (all are checked against the allowlist), except
    that a bare network class name (``"ResidualEncoderUNet"``, as in nnssl plans) becomes its dotted
    path, which nnU-Net plans need. Raises ``ArchitectureError`` for a malformed description and
    ``UnsafeClassError`` for a class name that is not on the allowlist.
    """
    _check_shape(arch, source)
    out = _plain(copy.deepcopy({k: arch[k] for k in _ARCH_KEYS}))
    cls = resolve_class(out["network_class_name"], source=source)
    if not (issubclass(cls, nn.Module) and "num_classes" in inspect.signature(cls.__init__).parameters):
        where = f"{source}: " if source else ""
        raise ArchitectureError(f"{where}{out['network_class_name']!r} is not a network class")
    if "." not in out["network_class_name"]:
        out["network_class_name"] = canonical_class_name(cls)
    for key in out["_kw_requires_import"]:
        value = out["arch_kwargs"][key]
        if value is not None:
            resolve_class(value, source=source)
    return out


def _network_class(arch: Mapping[str, Any]) -> type[nn.Module]:
    return resolve_class(arch["network_class_name"])


def _resolved_kwargs(arch: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    kwargs = copy.deepcopy(dict(arch["arch_kwargs"]))
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = resolve_class(kwargs[key], source=source)
    return kwargs


def build_network(arch: Mapping[str, Any], input_channels: int, num_classes: int, *,
                  deep_supervision: bool = False, source: str | None = None) -> nn.Module:
    """Instantiate the network described by ``arch`` (PyTorch default initialisation).

    Args:
        arch: architecture description (see module docstring).
        input_channels: image channels of the network input.
        num_classes: output channels of the segmentation / reconstruction head.
        deep_supervision: build the deep-supervision outputs (heads exist either way in DNA U-Nets).
        source: file the description came from, for error messages.
    """
    arch = canonical_architecture(arch, source=source)
    kwargs = _resolved_kwargs(arch, source)
    try:
        return _network_class(arch)(input_channels=input_channels, num_classes=num_classes,
                                    deep_supervision=deep_supervision, **kwargs)
    except (TypeError, AssertionError, ValueError) as e:
        where = f"{source}: " if source else ""
        raise ArchitectureError(f"{where}cannot build {arch['network_class_name']}: {e}") from e


def _conv_dim(conv_op: Any) -> int:
    name = getattr(conv_op, "__name__", "")
    return int(name[-2]) if len(name) > 2 and name[-2].isdigit() else 3


def _expanded(arch: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical form with defaults and scalar shorthands expanded, for comparisons only."""
    arch = canonical_architecture(arch)
    cls = _network_class(arch)
    kwargs = _resolved_kwargs(arch)
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", *_RUNTIME_ARGS) or p.default is inspect.Parameter.empty or name in kwargs:
            continue
        kwargs[name] = canonical_class_name(p.default) if isinstance(p.default, type) else p.default
    for key, value in list(kwargs.items()):
        if isinstance(value, type):
            kwargs[key] = canonical_class_name(value)
    n, dim = int(kwargs.get("n_stages", 0)), _conv_dim(kwargs.get("conv_op"))
    for key in ("kernel_sizes", "strides"):
        v = kwargs.get(key)
        if not isinstance(v, list):
            v = [v] * n
        kwargs[key] = [list(s) if isinstance(s, list) else [s] * dim for s in v]
    for key, length in (("features_per_stage", n), ("n_blocks_per_stage", n), ("n_conv_per_stage", n),
                        ("n_conv_per_stage_decoder", n - 1)):
        if key in kwargs and isinstance(kwargs[key], int):
            kwargs[key] = [kwargs[key]] * length
    return {"network_class_name": canonical_class_name(cls), "arch_kwargs": kwargs}


def same_architecture(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True if ``a`` and ``b`` build the same network (class-name spellings, tuples vs lists, scalar
    shorthands and omitted defaults do not matter)."""
    return _expanded(a) == _expanded(b)


def is_resenc_l(arch: Mapping[str, Any]) -> bool:
    """True if ``arch`` is exactly the ResEnc-L preset (the ``"ResEncL"`` of nnssl adaptation plans)."""
    return same_architecture(arch, resenc_l_architecture())
