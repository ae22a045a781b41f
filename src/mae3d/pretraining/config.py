"""The pre-training run configuration (one dataclass tree; defaults are the paper's values).

Paper / reference defaults (paper.md §6, nnssl.md §3): ResEnc-L, S3D, 160^3 patches at 1 mm,
batch 6, SGD Nesterov momentum 0.99, lr 1e-2 with poly(0.9) decay per epoch, weight decay 3e-5,
gradient-norm clip 12, 1000 epochs x 250 iterations (+ 50 validation batches), MSE on masked voxels
(defaced voxels excluded), 32^3 mask blocks (the 5^3 bottleneck grid at 160^3; nnssl's code uses
16^3), mask ratio U(0.6, 0.9) per sample. docs/pretraining.md tabulates every value with nnssl's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mae3d.corpus.filters import CorpusFilter
from mae3d.models import ArchitectureConfig
from mae3d.pretraining.data.config import LoaderConfig
from mae3d.utils.device import Precision

__all__ = ["CheckpointConfig", "DataConfig", "MaskConfig", "MethodConfig", "OptimConfig", "PretrainConfig",
           "TrainConfig"]

_FILTER_KEYS = ("modalities", "min_shape", "quality_field", "min_quality", "max_quality")


@dataclass
class DataConfig:
    """Which preprocessed corpus to train on and which of its cases to use.

    ``filter`` is the corpus filter of ``mae3d.corpus.filters`` as is (the one ``mae3d prepare``
    applies to manifests), evaluated on the stored case properties (modality, metadata, stored shape).
    """

    corpus: str = ""  #: folder written by ``mae3d prepare``
    filter: CorpusFilter = field(default_factory=CorpusFilter)  #: e.g. data.filter.modalities=[T1w]
    #: exclude voxels marked in a case's anonymisation (defacing) mask from the reconstruction loss
    #: and zero them in the network input - used when the selected cases have such masks
    #: (nnssl's ``_ANON`` trainers); false = ignore the masks
    exclude_defaced: bool = True

    __removed_keys__ = MappingProxyType({k: f"moved to data.filter.{k}" for k in _FILTER_KEYS})


@dataclass
class MaskConfig:
    """Block masking: 32^3 blocks (the paper's 5^3 grid at 160^3; nnssl's code uses 16^3 blocks).

    ``ratio`` is the paper's final dynamic ratio: every sample draws its own ratio from U(0.6, 0.9)
    (nnssl's ``VariableSparkMAETrainer`` draws one per batch). A single number is a fixed ratio with
    an exact masked-block count per sample (``ratio=0.75``: nnssl's ``SparkMAETrainer`` default).
    """

    block_size: int = 32  #: voxels per mask block edge; must divide the patch size
    ratio: float | tuple[float, float] = (0.6, 0.9)  #: (lo, hi) drawn per sample, or a fixed ratio


@dataclass
class MethodConfig:
    name: str = "s3d"  #: a registered method (mae, s3d)
    #: the method's own options, validated by its Config dataclass (e.g. sparse_conv=false)
    options: dict[str, Any] = field(default_factory=dict)
    mask: MaskConfig = field(default_factory=MaskConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    grad_clip: float = 12.0  #: max gradient norm (0 = no clipping)
    schedule: str = "poly"  #: a registered schedule (poly, constant, warmup-poly)
    poly_exponent: float = 0.9
    warmup_epochs: int = 0  #: used by warmup-poly


@dataclass
class TrainConfig:
    epochs: int = 1000
    iterations_per_epoch: int = 250
    #: validation batches per epoch, the same held-out patches and masks every epoch (nnssl: 50);
    #: 0 = every held-out case loader.val_patches_per_case times
    val_iterations: int = 50
    #: the run's only seed: initial weights, masks, the training data stream and the train/val split
    seed: int = 0
    device: str = "auto"  #: auto, cpu, cuda
    precision: Precision = "auto"  #: auto = bf16 autocast on CUDA, fp32 on CPU (mae3d.utils.device)
    compile: bool = False  #: torch.compile the model
    num_threads: int = 0  #: intra-op CPU threads of this process (0 = torch's default)
    nan_patience: int = 0  #: non-finite losses tolerated per epoch before stopping
    preview_every: int = 50  #: epochs between reconstruction previews (0 = only at the end)
    tensorboard: bool = True
    quiet: bool = False  #: no progress bar (batch jobs writing to log files)


@dataclass
class CheckpointConfig:
    every: int = 50  #: epochs between checkpoint_latest.pth writes
    keep_every: int = 0  #: also keep checkpoint_epoch_N.pth every N epochs (0 = never)


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ArchitectureConfig = field(default_factory=lambda: ArchitectureConfig(name="resenc-l"))
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
