"""Checkpoint formats (mae3d, nnssl/OpenMind, nnU-Net full state dict and training checkpoints) and
loading pre-trained weights into downstream networks (stem + encoder, channel adaptation, report).

Class names and networks come from :mod:`mae3d.models` (the one allowlist and the one builder); the
names re-exported here keep ``mae3d.transfer``'s public API.
"""

from mae3d.models import ArchitectureError, UnsafeClassError, resolve_class
from mae3d.transfer.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_weights_only,
    make_checkpoint,
    save_checkpoint,
    validate,
)
from mae3d.transfer.load import TransferError, TransferReport, read_pretrained, transfer_weights, unwrap
from mae3d.transfer.nnssl import export_nnssl, import_nnssl, resenc_l_architecture
from mae3d.transfer.nnunet import export_nnunet, load_training_checkpoint

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "TransferError",
    "TransferReport",
    "UnsafeCheckpointError",
    "UnsafeClassError",
    "export_nnssl",
    "export_nnunet",
    "import_nnssl",
    "load_checkpoint",
    "load_training_checkpoint",
    "load_weights_only",
    "make_checkpoint",
    "read_pretrained",
    "resenc_l_architecture",
    "resolve_class",
    "save_checkpoint",
    "transfer_weights",
    "unwrap",
    "validate",
]
