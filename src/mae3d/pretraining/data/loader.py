"""DataLoaders for pre-training: multi-process augmented training batches and fixed validation batches.

Typical use (per DDP rank)::

    train_ids, val_ids = split_corpus(PreprocessedCorpus(root), val_fraction=cfg.val_fraction, seed=seed)
    train = build_train_loader(root, train_ids, cfg, seed=seed, rank=rank, world_size=world,
                               start_batch=start_epoch * iterations_per_epoch)
    batches = iterate_batches(train, cfg, device)   # one iterator for the whole run
    for epoch in range(start_epoch, epochs):
        for step in range(iterations_per_epoch):
            x_b1dhw = next(batches)["x"]   # on device, augmented

Worker processes use one torch thread and one blosc2 thread each (the parallelism is the workers).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import blosc2
import torch
from torch.utils.data import DataLoader, default_collate, get_worker_info

from mae3d.pretraining.data.config import MASK_KINDS, LoaderConfig
from mae3d.pretraining.data.dataset import TrainPatchStream, ValPatchDataset
from mae3d.pretraining.data.gpu import GPUAugment
from mae3d.pretraining.data.workspace import new_tensor

__all__ = ["build_train_loader", "build_val_loader", "collate_patches", "iterate_batches", "mask_keys"]


def mask_keys(cfg: LoaderConfig) -> tuple[str, ...]:
    """Batch keys of the masks ``cfg`` loads ("anon", "anat")."""
    return tuple(MASK_KINDS[k] for k in cfg.masks)


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if get_worker_info() is not None:
        return default_collate(list(tensors))  # stacks straight into shared memory for the transfer
    out = new_tensor((len(tensors), *tensors[0].shape), tensors[0].numpy().dtype)
    return torch.stack(list(tensors), out=out)


def collate_patches(samples: Sequence[dict[str, Any]], mask_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Batch ``sample_patch`` outputs: ``{"x": (B, 1, *P), <mask key>: (B, 1, *P), "case_ids": [...]}``."""
    out: dict[str, Any] = {key: _stack([s[key] for s in samples]) for key in ("x", *mask_keys)}
    out["case_ids"] = [s["case_id"] for s in samples]
    return out


def _init_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)
    blosc2.set_nthreads(1)


def _loader_kwargs(cfg: LoaderConfig, workers: int, device: torch.device | str | None) -> dict[str, Any]:
    dev = torch.device(device) if device is not None else None
    pin = cfg.pin_memory and torch.cuda.is_available() and (dev is None or dev.type == "cuda")
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        kw.update(prefetch_factor=cfg.prefetch, worker_init_fn=_init_worker)
    return kw


def build_train_loader(root: str | os.PathLike, case_ids: Sequence[str], cfg: LoaderConfig, *, seed: int,
                       rank: int = 0, world_size: int = 1, start_batch: int = 0,
                       device: torch.device | str | None = None) -> DataLoader:
    """Endless DataLoader of training batches over ``case_ids`` of the corpus at ``root``.

    Batches are ``{"x": (B, 1, *P) float32, <mask key>: uint8, "case_ids": [...]}``, or with
    ``cfg.device_augment`` the region batches of ``collate_regions`` (finish them with
    ``iterate_batches``/``GPUAugment``). Batch ``n`` of a rank is drawn with the seed
    ``(seed, rank, n)`` (``seed``: the run's ``train.seed``), whatever the number of workers; the
    loader yields batches ``start_batch, start_batch + 1, ...``. Iterate it once per run: its
    workers then start once.
    Raises ``EmptySelectionError`` for an empty ``case_ids``.
    """
    stream = TrainPatchStream(root, case_ids, cfg, seed=seed, rank=rank, world_size=world_size,
                              start_batch=start_batch)
    # the stream assembles whole batches itself (batch_size=None: no collation step)
    return DataLoader(stream, batch_size=None, **_loader_kwargs(cfg, cfg.workers, device))


def build_val_loader(root: str | os.PathLike, case_ids: Sequence[str], cfg: LoaderConfig, *, seed: int,
                     rank: int = 0, world_size: int = 1, num_batches: int = 0,
                     device: torch.device | str | None = None) -> DataLoader:
    """Finite, deterministic DataLoader of unaugmented validation batches (this rank's share).

    ``num_batches > 0``: exactly that many batches, the same patches on every call (see
    ``ValPatchDataset``); 0: every case ``cfg.val_patches_per_case`` times.

    Uses ``max(1, cfg.workers // 2)`` workers (none if ``cfg.workers == 0``) and
    ``cfg.val_batch_size`` (0 = ``cfg.batch_size``); never device-augmented.
    """
    batch = cfg.val_batch_size or cfg.batch_size
    ds = ValPatchDataset(root, case_ids, cfg, seed=seed, rank=rank, world_size=world_size,
                         num_patches=num_batches * batch)
    workers = max(1, cfg.workers // 2) if cfg.workers > 0 else 0
    kw = _loader_kwargs(cfg, workers, device)  # not persistent: validation runs rarely
    return DataLoader(ds, batch_size=batch, shuffle=False,
                      collate_fn=functools.partial(collate_patches, mask_keys=mask_keys(cfg)), **kw)


def iterate_batches(loader: Iterable[dict[str, Any]], cfg: LoaderConfig, device: torch.device | str
                    ) -> Iterator[dict[str, Any]]:
    """Yield training-ready batches on ``device``: augmented on the device if ``cfg.device_augment``."""
    dev = torch.device(device)
    keys = mask_keys(cfg)
    gpu_aug = GPUAugment(cfg.patch_size, keys) if cfg.device_augment else None
    for batch in loader:
        if gpu_aug is not None:
            yield gpu_aug(batch, dev)
            continue
        out = {k: batch[k].to(dev, non_blocking=True) for k in ("x", *keys)}
        out["case_ids"] = batch["case_ids"]
        yield out
