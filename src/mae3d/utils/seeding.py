"""Seeding of the process-global random generators that nnU-Net and batchgenerators draw from."""

from __future__ import annotations

import random

__all__ = ["seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators (all devices) with ``seed``.

    mae3d's pre-training derives explicit per-rank / per-worker generators from ``train.seed`` instead;
    this is for code that draws from the global state and cannot be handed a generator (nnU-Net's
    trainer, data loader and transforms).
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
