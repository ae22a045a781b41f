"""Load pre-trained weights into a downstream network: stem + encoder, decoder and heads left fresh.

This is what the nnssl fine-tuning fork does (nnssl.md §6.3, paper.md §7): the pre-trained stem and
encoder are loaded strictly; the decoder, transposed convolutions and segmentation heads keep their
initialisation. When the downstream task has C input channels and the checkpoint 1, the stem's first
convolution weight ``(O, 1, k, k, k)`` is repeated to ``(O, C, k, k, k)`` and divided by C (bias
unchanged), so a C-channel input whose channels are identical produces exactly the pre-trained stem
response. Unlike the fork, the repeat works for any kernel dimensionality (its PlainConvUNet branch
repeats a 5-D weight with 4 factors, nnssl.md §8 item 16).

Every other shape difference is an error naming the key and both shapes; nothing is loaded silently.
The returned :class:`TransferReport` lists loaded / adapted / fresh / skipped keys (like MONAI's
``copy_model_state``) for the caller to log or write as JSON.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mae3d.models import network_from_description
from mae3d.transfer.checkpoint import FORMAT, CheckpointError, load_weights_only, validate
from mae3d.transfer.nnssl import PLAN_NAME, import_nnssl, nnssl_to_mae3d

__all__ = ["TransferError", "TransferReport", "build_pretrained_network", "read_pretrained",
           "transfer_weights", "unwrap"]

_PARTS = ("stem", "encoder", "all")


class TransferError(ValueError):
    """Pre-trained weights do not fit the network; the message names the key and the shapes."""


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, by state-dict key of the network / checkpoint.

    Attributes:
        source: checkpoint file (if known).
        include: the parts transferred and the module prefixes they map to.
        loaded: network keys under the transferred prefixes, now holding checkpoint values.
        aliases: other network keys sharing those tensors (the DNA U-Nets' decoder keeps a reference
            to the encoder, so ``decoder.encoder.*`` are the same tensors under a second name).
        adapted: network key -> {checkpoint_shape, network_shape, how} for input-channel adaptation.
        fresh: network keys left at their initialisation (decoder, heads).
        skipped: checkpoint keys not used (outside the transferred parts).
    """

    source: str | None
    include: dict[str, str]
    loaded: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    adapted: dict[str, dict[str, Any]] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def input_channels_adapted(self) -> bool:
        """True if the input projection was repeated over channels (warm it up with the decoder)."""
        return bool(self.adapted)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return asdict(self)

    def format(self) -> str:
        """A few human-readable lines (counts grouped by module prefix)."""

        def groups(keys: Iterable[str]) -> str:
            c = Counter(".".join(k.split(".")[:2]) for k in keys)
            return ", ".join(f"{g}.* {n}" for g, n in sorted(c.items())) or "none"

        src = f" from {self.source}" if self.source else ""
        lines = [f"transferred {'+'.join(self.include)}{src}: {len(self.loaded)} tensors loaded "
                 f"({groups(self.loaded)}; +{len(self.aliases)} aliases)"]
        for key, a in self.adapted.items():
            lines.append(f"  adapted {key}: {tuple(a['checkpoint_shape'])} -> {tuple(a['network_shape'])} "
                         f"({a['how']})")
        lines.append(f"  left at initialisation: {len(self.fresh)} ({groups(self.fresh)})")
        lines.append(f"  not used from checkpoint: {len(self.skipped)} ({groups(self.skipped)})")
        return "\n".join(lines)


def read_pretrained(path: str | os.PathLike) -> dict[str, Any]:
    """Read a pre-trained checkpoint in any supported format as a mae3d checkpoint dict.

    Accepts a mae3d checkpoint file, an nnssl/OpenMind ``checkpoint_final.pth`` (with embedded
    ``nnssl_adaptation_plan`` or a sibling ``adaptation_plan.json``) or a folder containing one.
    """
    path = Path(path)
    if path.is_dir():
        return import_nnssl(path)
    raw = load_weights_only(path)
    if isinstance(raw, Mapping) and raw.get("format") == FORMAT:
        validate(raw, source=path)
        return dict(raw)
    has_plan = "nnssl_adaptation_plan" in raw or (path.parent / PLAN_NAME).is_file() \
        if isinstance(raw, Mapping) else False
    if has_plan:
        return nnssl_to_mae3d(raw, source=path)
    raise CheckpointError(f"{path}: neither a mae3d checkpoint nor an nnssl checkpoint with an "
                          "adaptation plan")


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DDP (``module``) and torch.compile (``_orig_mod``) wrappers."""
    while True:
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            return network


def _adapt_in_proj(key: str, w_ckpt: torch.Tensor, net_shape: torch.Size) -> torch.Tensor:
    c_ckpt, c_net = w_ckpt.shape[1], net_shape[1]
    if w_ckpt.ndim != len(net_shape) or w_ckpt.shape[0] != net_shape[0] or w_ckpt.shape[2:] != net_shape[2:]:
        raise TransferError(f"{key}: checkpoint shape {tuple(w_ckpt.shape)} does not fit network shape "
                            f"{tuple(net_shape)}")
    if c_ckpt > c_net:
        raise TransferError(f"{key}: checkpoint has {c_ckpt} input channels but the network only {c_net}; "
                            "dropping pre-trained input channels is not supported")
    if c_ckpt != 1:
        raise TransferError(f"{key}: cannot adapt {c_ckpt} pre-trained input channels to {c_net} "
                            "(only 1 -> C is supported)")
    reps = (1, c_net) + (1,) * (w_ckpt.ndim - 2)
    return w_ckpt.repeat(*reps) / c_net


def _prefixes(keys: Mapping[str, Any], include: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in include:
        if part not in _PARTS:
            raise ValueError(f"unknown part {part!r} to transfer; valid: {list(_PARTS)}")
        out[part] = "" if part == "all" else keys[part]
    if not out:
        raise ValueError("nothing to transfer (include is empty)")
    return out


def _covered(prefix: str, others: Iterable[str]) -> bool:
    return any(q != prefix and (q == "" or prefix.startswith(q + ".")) for q in others)


def transfer_weights(network: nn.Module, ckpt: Mapping[str, Any] | str | os.PathLike, *,
                     include: Iterable[str] = ("stem", "encoder")) -> TransferReport:
    """Copy pre-trained weights of the chosen parts into ``network`` (in place).

    Args:
        network: downstream network (DDP / torch.compile wrappers are looked through).
        ckpt: a mae3d checkpoint dict or a checkpoint path (see :func:`read_pretrained`).
        include: parts to load: ``"stem"``, ``"encoder"`` (module prefixes from ``ckpt["keys"]``) or
            ``"all"`` (the whole network, e.g. for exporting; heads must then match too).

    Returns:
        The :class:`TransferReport`.

    Raises:
        TransferError: a network module is missing, a key is missing on either side, a shape differs
            anywhere except the input channels of the input projection, or the checkpoint has more /
            incompatible input channels.
    """
    source = None
    if isinstance(ckpt, (str, os.PathLike)):
        source = str(ckpt)
        ckpt = read_pretrained(ckpt)
    validate(ckpt, source=source)
    net = unwrap(network)
    keys = ckpt["keys"]
    prefixes = _prefixes(keys, include)
    active = {p: pre for p, pre in prefixes.items() if not _covered(pre, prefixes.values())}
    weights: Mapping[str, torch.Tensor] = ckpt["network_weights"]
    try:
        in_proj_ptrs = {net.get_submodule(k).weight.data_ptr() for k in keys["in_proj"]}
    except AttributeError:
        raise TransferError(f"network {type(net).__name__} has no input projection "
                            f"{keys['in_proj']}") from None

    adapted: dict[str, dict[str, Any]] = {}
    loaded_ids: set[int] = set()
    for part, prefix in active.items():
        try:
            sub = net.get_submodule(prefix)
        except AttributeError:
            raise TransferError(f"network {type(net).__name__} has no module {prefix!r} "
                                f"(keys.{part})") from None
        dot = prefix + "." if prefix else ""
        target = sub.state_dict()
        from_ckpt = {k[len(dot):]: v for k, v in weights.items() if k.startswith(dot)}
        missing = sorted(set(target) - set(from_ckpt))
        unexpected = sorted(set(from_ckpt) - set(target))
        scope = repr(prefix) if prefix else "the whole network"
        if missing:
            raise TransferError(f"checkpoint lacks {len(missing)} key(s) the network needs in {scope}, "
                                f"e.g. {dot}{missing[0]}")
        if unexpected:
            raise TransferError(f"checkpoint has {len(unexpected)} key(s) in {scope} that the network "
                                f"lacks, e.g. {dot}{unexpected[0]}")
        new_state: dict[str, torch.Tensor] = {}
        for name, t in target.items():
            full, value = dot + name, from_ckpt[name]
            if value.shape != t.shape:
                if t.data_ptr() not in in_proj_ptrs or not name.endswith("weight"):
                    raise TransferError(f"{full}: shape mismatch: checkpoint {tuple(value.shape)} vs network "
                                        f"{tuple(t.shape)}")
                c = t.shape[1]
                adapted[full] = {"checkpoint_shape": list(value.shape), "network_shape": list(t.shape),
                                 "how": f"repeated over {c} input channels and divided by {c}"}
                value = _adapt_in_proj(full, value, t.shape)
            new_state[name] = value
        sub.load_state_dict(new_state, strict=True)
        loaded_ids.update(id(x) for x in (*sub.parameters(), *sub.buffers()))

    named = dict(net.named_parameters(remove_duplicate=False))
    named.update(net.named_buffers(remove_duplicate=False))
    report = TransferReport(source=source, include=prefixes)
    for key in net.state_dict():
        if id(named.get(key)) not in loaded_ids:
            report.fresh.append(key)
        elif any(not pre or key.startswith(pre + ".") for pre in active.values()):
            report.loaded.append(key)
        else:
            report.aliases.append(key)
    loaded = {*report.loaded, *report.aliases}
    report.skipped = [k for k in weights if k not in loaded]
    report.adapted = adapted
    return report


def build_pretrained_network(ckpt: Mapping[str, Any], *, input_channels: int | None = None,
                             num_classes: int | None = None) -> tuple[nn.Module, TransferReport]:
    """Build the checkpoint's architecture and load weights into it.

    With the defaults (pre-training input channels and output channels) the whole network is loaded
    (``include=("all",)``); with a different ``num_classes`` only stem + encoder are loaded; with more
    ``input_channels`` the input projection is adapted.
    """
    validate(ckpt)
    pre = ckpt["pretrain"]
    c_in = pre["in_channels"] if input_channels is None else input_channels
    n_out = pre["num_output_channels"] if num_classes is None else num_classes
    net = network_from_description(ckpt["architecture"], c_in, n_out, False, "pytorch")
    include = ("all",) if n_out == pre["num_output_channels"] else ("stem", "encoder")
    return net, transfer_weights(net, ckpt, include=include)
