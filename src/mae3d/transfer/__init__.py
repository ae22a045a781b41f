"""Checkpoint formats (mae3d, nnssl/OpenMind, nnU-Net full state dict), allowlisted class resolution,
and loading pre-trained weights into downstream networks (stem + encoder, channel adaptation, report)."""

from mae3d.transfer.allowlist import UnsafeClassError, resolve_class
from mae3d.transfer.architecture import ArchitectureError, build_network, resenc_l_architecture
from mae3d.transfer.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    validate,
)
from mae3d.transfer.load import TransferError, TransferReport, read_pretrained, transfer_weights
from mae3d.transfer.nnssl import export_nnssl, import_nnssl
from mae3d.transfer.nnunet import export_nnunet

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "TransferError",
    "TransferReport",
    "UnsafeCheckpointError",
    "UnsafeClassError",
    "build_network",
    "export_nnssl",
    "export_nnunet",
    "import_nnssl",
    "load_checkpoint",
    "make_checkpoint",
    "read_pretrained",
    "resenc_l_architecture",
    "resolve_class",
    "save_checkpoint",
    "transfer_weights",
    "validate",
]
