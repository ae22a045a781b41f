"""Architecture descriptions as nnU-Net plans store them: validate, normalise and compare.

An architecture is described the way nnU-Net v2 plans do (``configurations[...]["architecture"]``)::

    {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
     "arch_kwargs": {"n_stages": 6, "features_per_stage": [...],
                     "conv_op": "torch.nn.modules.conv.Conv3d", ...},
     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}

so that a mae3d checkpoint's architecture can be pasted into an nnU-Net plans file unchanged. Input
channels, number of output classes and deep supervision are run-time arguments, not part of it.
Class names are only resolved through :mod:`mae3d.models.allowlist`. Networks are built from a
description by :func:`mae3d.models.network_from_description`, the one builder in mae3d.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from mae3d.models.allowlist import canonical_class_name, resolve_class
from mae3d.models.spec import ArchitectureError

__all__ = ["RUNTIME_ARGS", "canonical_architecture", "resolved_arch_kwargs", "same_architecture"]

#: constructor arguments that are chosen per run, never stored in a description's ``arch_kwargs``
RUNTIME_ARGS = ("input_channels", "num_classes", "deep_supervision")
_ARCH_KEYS = ("network_class_name", "arch_kwargs", "_kw_requires_import")


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
    runtime = [k for k in RUNTIME_ARGS if k in arch["arch_kwargs"]]
    if runtime:
        raise ArchitectureError(f"{where}arch_kwargs must not contain run-time arguments {runtime}")


def canonical_architecture(arch: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """Validate ``arch`` and return a plain copy holding only the three architecture keys.

    Tuples become lists; class-name spellings are kept (all are checked against the allowlist), except
    that a bare network class name (``"ResidualEncoderUNet"``, as in nnssl plans) becomes its dotted
    path, which nnU-Net plans need. Extra keys (e.g. those of :func:`mae3d.models.describe`) are dropped.

    Raises:
        ArchitectureError: malformed description or a class that is not a network.
        UnsafeClassError: a class name that is not on the allowlist.
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


def resolved_arch_kwargs(arch: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """``arch_kwargs`` of a canonical description with the class-name entries resolved to classes."""
    kwargs = copy.deepcopy(dict(arch["arch_kwargs"]))
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = resolve_class(kwargs[key], source=source)
    return kwargs


def _conv_dim(conv_op: Any) -> int:
    name = getattr(conv_op, "__name__", "")
    return int(name[-2]) if len(name) > 2 and name[-2].isdigit() else 3


def _expanded(arch: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical form with defaults and scalar shorthands expanded, for comparisons only."""
    arch = canonical_architecture(arch)
    cls = resolve_class(arch["network_class_name"])
    kwargs = resolved_arch_kwargs(arch)
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", *RUNTIME_ARGS) or p.default is inspect.Parameter.empty or name in kwargs:
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
