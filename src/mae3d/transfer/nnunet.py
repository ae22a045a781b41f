"""nnU-Net v2 checkpoint files: export for ``nnUNetv2_train -pretrained_weights``, read training checkpoints.

Export (:func:`export_nnunet`) writes a full network state dict for plain nnU-Net v2
(``nnUNetv2_train ... -pretrained_weights FILE``).

nnU-Net's ``nnunetv2.run.load_pretrained_weights.load_pretrained_weights(network, fname)`` reads
``torch.load(fname)["network_weights"]`` and requires *every* key of the downstream network except the
segmentation heads (keys containing ``.seg_layers.``) to be present with the same shape; heads are
skipped, so the number of classes may differ. The downstream plans must therefore use the same
architecture (e.g. the checkpoint's ``architecture`` as ``configurations.3d_fullres.architecture``) and
the same number of input channels -- pass ``input_channels`` to pre-adapt the stem for multi-channel
data (repeat / C, see :mod:`mae3d.transfer.load`).

Unlike the stem+encoder transfer of the nnssl fine-tuning fork, this loads the pre-trained decoder too
(nnU-Net's function has no way to leave it out); use the mae3d fine-tuning trainer for stem+encoder only.

Reading (:func:`load_training_checkpoint`): nnU-Net's own ``checkpoint_final.pth`` / ``_latest`` /
``_best`` (also those of :class:`~mae3d.finetuning.trainer.FinetuneTrainer`), which nnU-Net loads with
``weights_only=False``; here through :func:`~mae3d.transfer.checkpoint.load_weights_only`, which allows
the numpy scalars in their logs and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mae3d.io.atomic import atomic_path
from mae3d.transfer.checkpoint import CheckpointError, load_weights_only, strip_training_state, validate
from mae3d.transfer.load import build_pretrained_network

__all__ = ["export_nnunet", "load_training_checkpoint"]


def export_nnunet(ckpt: Mapping[str, Any], dest: str | os.PathLike, *, input_channels: int | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``{"network_weights": full state dict, "mae3d": metadata}`` to ``dest`` (atomically).

    The network is rebuilt from the checkpoint's architecture and loaded strictly, so the file holds
    every key nnU-Net will ask for (including the ``decoder.encoder.*`` aliases of DNA U-Nets).

    Args:
        ckpt: mae3d checkpoint dict.
        dest: output ``.pth`` file.
        input_channels: downstream input channels (default: the pre-training channels).
        overwrite: replace an existing ``dest``.
    """
    validate(ckpt)
    ck = strip_training_state(ckpt)
    net, report = build_pretrained_network(ck, input_channels=input_channels)
    n_in = ck["pretrain"]["in_channels"] if input_channels is None else input_channels
    meta = {k: ck[k] for k in ("format", "version", "architecture", "pretrain", "keys", "config",
                               "provenance")}
    meta["input_channels"] = int(n_in)
    meta["adapted"] = report.to_dict()["adapted"]
    payload = {"network_weights": net.state_dict(), "mae3d": meta}
    with atomic_path(dest, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(dest)


def load_training_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                             ) -> dict[str, Any]:
    """Load an nnU-Net training checkpoint (``network_weights``, ``optimizer_state``, ``logging``, ...).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs other Python globals (nothing was executed).
        CheckpointError: not readable, or not an nnU-Net training checkpoint.
    """
    ckpt = load_weights_only(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise CheckpointError(f"{path}: not an nnU-Net training checkpoint (no 'network_weights')")
    return ckpt
