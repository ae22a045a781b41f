"""Network architectures: nnU-Net's ResidualEncoderUNet presets, builders and the encoder key map.

Knows nothing about SSL methods; :mod:`mae3d.pretraining` wraps these plain networks.
"""

from __future__ import annotations

from mae3d.models.allowlist import UnsafeClassError, resolve_class
from mae3d.models.build import (
    KEY_TO_ENCODER,
    KEY_TO_STEM,
    KEYS_TO_IN_PROJ,
    NETWORK_CLASS_NAME,
    build_network,
    count_parameters,
    describe,
    encoder_state_keys,
    init_weights,
    network_from_description,
)
from mae3d.models.description import canonical_architecture, same_architecture
from mae3d.models.geometry import PatchSizeError, as_triple, check_patch_size, stage_shapes, total_stride
from mae3d.models.spec import ARCHITECTURES, ArchitectureConfig, ArchitectureError, ArchitectureSpec, resolve

__all__ = [
    "ARCHITECTURES",
    "KEYS_TO_IN_PROJ",
    "KEY_TO_ENCODER",
    "KEY_TO_STEM",
    "NETWORK_CLASS_NAME",
    "ArchitectureConfig",
    "ArchitectureError",
    "ArchitectureSpec",
    "PatchSizeError",
    "UnsafeClassError",
    "as_triple",
    "build_network",
    "canonical_architecture",
    "check_patch_size",
    "count_parameters",
    "describe",
    "encoder_state_keys",
    "init_weights",
    "network_from_description",
    "resolve",
    "resolve_class",
    "same_architecture",
    "stage_shapes",
    "total_stride",
]
