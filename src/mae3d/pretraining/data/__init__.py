"""Pre-training data: augmented patch sampling from the preprocessed corpus, loaders, splits.

* ``params``: per-patch augmentation parameters and the coordinate convention;
* ``sampling``: CPU path - read only the needed box from blosc2, crop or interpolate the patch;
* ``gpu``: device path - the same transforms batched with ``grid_sample`` on the training device;
* ``dataset`` / ``loader``: seeded training stream, fixed validation patches, DataLoaders;
* ``split``: subject-level train/validation split.
"""

from mae3d.pretraining.data.config import MASK_KINDS, AugmentConfig, LoaderConfig
from mae3d.pretraining.data.dataset import EmptySelectionError, TrainPatchStream, ValPatchDataset, batch_seed
from mae3d.pretraining.data.gpu import GPUAugment, augment_batch, collate_regions
from mae3d.pretraining.data.loader import (
    build_train_loader,
    build_val_loader,
    collate_patches,
    iterate_batches,
    mask_keys,
)
from mae3d.pretraining.data.params import PatchParams, draw_params, output_bbox, rotation_matrix
from mae3d.pretraining.data.sampling import read_region, sample_patch, sample_region
from mae3d.pretraining.data.split import split_cases, split_corpus, subject_of
from mae3d.pretraining.data.workspace import Workspace

__all__ = [
    "MASK_KINDS",
    "AugmentConfig",
    "EmptySelectionError",
    "GPUAugment",
    "LoaderConfig",
    "PatchParams",
    "TrainPatchStream",
    "ValPatchDataset",
    "Workspace",
    "augment_batch",
    "batch_seed",
    "build_train_loader",
    "build_val_loader",
    "collate_patches",
    "collate_regions",
    "draw_params",
    "iterate_batches",
    "mask_keys",
    "output_bbox",
    "read_region",
    "rotation_matrix",
    "sample_patch",
    "sample_region",
    "split_cases",
    "split_corpus",
    "subject_of",
]
