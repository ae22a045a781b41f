"""Resolve dotted class names found in plans and checkpoints through mae3d's one explicit allowlist.

nnU-Net plans, nnssl adaptation plans and mae3d checkpoints name classes as strings (e.g.
``"torch.nn.modules.conv.Conv3d"``). nnU-Net and nnssl turn those strings into objects with
``pydoc.locate``, which imports whatever a (possibly downloaded) file names. Here a string only maps
to a class if that exact name is in a fixed table built from the classes below; anything else raises
``UnsafeClassError`` and nothing is imported.

Accepted spellings for each allowed class: its defining path (``torch.nn.modules.conv.Conv3d``), the
public alias (``torch.nn.Conv3d``) and, for the dynamic_network_architectures U-Nets and blocks, the bare
class name that nnssl adaptation plans use (``ResidualEncoderUNet``).

This is the only allowlist in mae3d: :mod:`mae3d.models` builds networks through it and
:mod:`mae3d.transfer` / :mod:`mae3d.finetuning` use it (via :func:`mae3d.models.network_from_description`)
for every description read from a file. It lives in ``models`` because that is the lowest package that
needs it (``transfer`` imports ``models``, never the other way round).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# imported from the module, not the package: the package's Primus module needs timm (see COMMON.md)
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from torch import nn

__all__ = ["ALLOWED_CLASSES", "UnsafeClassError", "canonical_class_name", "is_allowed", "resolve_class"]


class UnsafeClassError(ValueError):
    """A class name is not on mae3d's allowlist (it is never imported)."""


_TORCH_CLASSES: tuple[type, ...] = (
    # convolutions
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    # normalisations
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.GroupNorm, nn.LayerNorm,
    # activations
    nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
    # dropout
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_DNA_CLASSES: tuple[type, ...] = (ResidualEncoderUNet, PlainConvUNet, BasicBlockD, BottleneckD)


def canonical_class_name(cls: type) -> str:
    """The defining dotted path of ``cls`` (what nnU-Net writes into plans)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _build_table() -> Mapping[str, type]:
    table: dict[str, type] = {}
    for cls in _TORCH_CLASSES:
        table[canonical_class_name(cls)] = cls
        table[f"torch.nn.{cls.__name__}"] = cls
    for cls in _DNA_CLASSES:
        table[canonical_class_name(cls)] = cls
        table[cls.__name__] = cls
    return MappingProxyType(table)


#: name -> class; read-only. The only way a string from a file becomes a class in mae3d.
ALLOWED_CLASSES: Mapping[str, type] = _build_table()


def is_allowed(name: Any) -> bool:
    """True if ``name`` is a string on the allowlist."""
    return isinstance(name, str) and name in ALLOWED_CLASSES


def resolve_class(name: str, *, source: str | None = None) -> type:
    """Map an allowed dotted class name to the class.

    Args:
        name: e.g. ``"torch.nn.InstanceNorm3d"`` or
            ``"dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"``.
        source: where the name was read (file / key), used in the error message.

    Raises:
        UnsafeClassError: ``name`` is not on the allowlist (nothing is imported or executed).
    """
    if is_allowed(name):
        return ALLOWED_CLASSES[name]
    where = f"{source}: " if source else ""
    raise UnsafeClassError(
        f"{where}class {name!r} is not allowed: it is not on mae3d's allowlist (torch.nn "
        "conv/norm/activation/dropout layers and the dynamic_network_architectures U-Nets); refusing to "
        "import it"
    )
