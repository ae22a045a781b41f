"""Reusable scratch memory for patch sampling in one process.

Fresh multi-megabyte torch CPU tensors are expensive on Linux: every 4 KiB page faults on first
touch (torch does not ask for transparent huge pages), which costs ~0.9 ms per MB - as much as the
arithmetic of building a 160³ sampling grid. numpy allocations are advised as huge pages, so the
large buffers here are numpy-allocated and wrapped with ``torch.from_numpy``, and scratch buffers
(grid, interpolation intermediates) are kept and reused across patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["Workspace", "batch_tensor", "new_tensor"]


def new_tensor(shape: Sequence[int], dtype: np.dtype | type = np.float32) -> torch.Tensor:
    """A fresh, uninitialised CPU tensor backed by numpy memory (huge-page advised when large)."""
    return torch.from_numpy(np.empty(tuple(int(s) for s in shape), dtype=dtype))


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A fresh tensor for a batch: in shared memory inside a DataLoader worker (so sending it to the
    main process copies nothing, as torch's ``default_collate`` does), numpy-backed otherwise."""
    shape = tuple(int(s) for s in shape)
    if get_worker_info() is not None:
        numel = int(np.prod(shape))
        storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
        return torch.empty((0,), dtype=dtype).set_(storage, 0, shape)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty((), dtype=dtype).numpy().dtype))


class Workspace:
    """Named scratch buffers, grown on demand and reused; one per process, never shared or pickled.

    A view returned by ``get`` is valid until the next ``get`` of the same name.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: Sequence[int], dtype: np.dtype | type = np.float32) -> torch.Tensor:
        """A contiguous tensor view of ``shape`` on the buffer ``name``."""
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < n or buf.dtype != np.dtype(dtype):
            buf = np.empty(n, dtype=dtype)
            self._bufs[name] = buf
        return torch.from_numpy(buf[:n]).view(shape)

    def __getstate__(self) -> dict:
        return {"_bufs": {}}  # scratch memory never travels to another process
