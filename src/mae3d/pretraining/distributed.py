"""torch.distributed set-up for ``torchrun`` (multi-GPU, multi-node) and single-process runs.

The same command works with one process (no process group is created) and under ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set by the launcher): NCCL on CUDA, gloo on CPU. Only rank 0
writes files; every rank draws its own data stream.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from mae3d.utils.device import torch_device

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "distributed", "split_batch"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def distributed(device: str = "auto", timeout_min: float = 30.0) -> Iterator[DistInfo]:
    """Initialise the process group if launched by ``torchrun``; tear it down on exit."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch_device(device, local_rank)
    created = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
        created = True
    try:
        yield DistInfo(rank, world, local_rank, dev)
    finally:
        if created:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Mean of a Python float over ranks (a no-op for one process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def split_batch(global_batch: int, info: DistInfo) -> int:
    """This rank's share of the global batch; it must divide evenly so gradients average exactly."""
    if global_batch % info.world_size:
        raise ValueError(f"global batch size {global_batch} is not divisible by the number of "
                         f"processes ({info.world_size})")
    return global_batch // info.world_size
