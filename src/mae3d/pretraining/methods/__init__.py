"""Masked-image-modelling methods (registry ``METHODS``): ``mae`` (dense) and ``s3d`` (Spark-3D).

Importing this package registers every built-in method; a new method is one module here with
``@METHODS.register("name")`` plus an import line below.
"""

from __future__ import annotations

from mae3d.pretraining.methods import mae as _mae  # noqa: F401  (registers "mae")
from mae3d.pretraining.methods import s3d as _s3d  # noqa: F401  (registers "s3d")
from mae3d.pretraining.methods.base import (
    METHODS,
    LossOn,
    MethodOutput,
    SSLMethod,
    build_method,
    reconstruction_loss,
)
from mae3d.pretraining.methods.mae import MAE, MAEConfig
from mae3d.pretraining.methods.s3d import S3D, S3DConfig

__all__ = [
    "MAE",
    "METHODS",
    "S3D",
    "LossOn",
    "MAEConfig",
    "MethodOutput",
    "S3DConfig",
    "SSLMethod",
    "build_method",
    "reconstruction_loss",
]
