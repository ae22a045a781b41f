"""Masked-image-modelling pre-training: masking, methods (MAE, S3D), patch loader, training loop.

Entry point: :func:`mae3d.pretraining.api.pretrain` with a
:class:`mae3d.pretraining.config.PretrainConfig`.
"""
