"""Datasets over a preprocessed corpus: an infinite augmented training stream and fixed validation patches.

The corpus (``mae3d.preprocessing.store.PreprocessedCorpus``) is opened lazily in the process that
reads, so DataLoader workers open their own blosc2 files instead of inheriting or unpickling them
(a dataset pickles as the corpus path and the case list). Randomness comes only from
``numpy.random.Generator`` objects: training batch ``n`` of a rank is drawn from one seeded with
``(seed, rank, n)``, so the stream is reproducible, differs between DDP ranks, does not depend on the
number of DataLoader workers, and can start at any batch (a resumed run continues the same stream).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from mae3d.preprocessing.store import PreprocessedCorpus
from mae3d.pretraining.data.config import MASK_KINDS, LoaderConfig
from mae3d.pretraining.data.gpu import collate_regions
from mae3d.pretraining.data.params import PatchParams, draw_centre, draw_params
from mae3d.pretraining.data.sampling import sample_patch, sample_region
from mae3d.pretraining.data.workspace import Workspace, batch_tensor

__all__ = ["EmptySelectionError", "TrainPatchStream", "ValPatchDataset", "batch_seed"]

_MAX_CONSECUTIVE_FAILURES = 50


class EmptySelectionError(ValueError):
    """No cases to load from (empty selection or split)."""


def batch_seed(seed: int, rank: int, batch_index: int) -> np.random.SeedSequence:
    """The seed of training batch ``batch_index`` of ``rank``'s stream; distinct for every triple."""
    return np.random.SeedSequence([int(seed), int(rank), int(batch_index)])


class _CorpusHandle:
    """Opens the corpus once per process (a forked worker re-opens instead of reusing the parent's)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._corpus: Any = None
        self._pid = -1

    def get(self) -> Any:
        if self._corpus is None or self._pid != os.getpid():
            self._corpus = PreprocessedCorpus(self.root)
            self._pid = os.getpid()
        return self._corpus

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_corpus": None, "_pid": -1}


def _masks(corpus: Any, case_id: str, kinds: Sequence[str], shape: Sequence[int]) -> dict[str, Any]:
    """Mask arrays by batch key; a case without a mask gets an all-zero stand-in (no memory)."""
    out = {}
    for kind in kinds:
        m = corpus.mask(case_id, kind)
        out[MASK_KINDS[kind]] = m if m is not None else np.broadcast_to(np.zeros((), np.uint8), tuple(shape))
    return out


def _check_cases(handle: _CorpusHandle, case_ids: Sequence[str], what: str) -> list[str]:
    """The case list, after checking it is non-empty and every id is a finished case of the corpus."""
    ids = list(case_ids)
    if not ids:
        raise EmptySelectionError(f"{what}: no cases selected (empty selection or split); nothing to load")
    known = set(handle.get().case_ids)
    unknown = [c for c in ids if c not in known]
    if unknown:
        raise ValueError(f"{handle.root}: {len(unknown)} selected case(s) are not finished cases of the "
                         f"corpus, e.g. {unknown[0]!r}")
    return ids


class TrainPatchStream(IterableDataset):
    """Endless stream of augmented training batches, cases drawn uniformly with replacement.

    Yields ``{"x": float32 (B, 1, *P), <mask key>: uint8 (B, 1, *P), "case_ids": [...]}`` - whole
    batches, each patch written straight into its slot (in shared memory inside a worker), so no
    per-patch copies are made for collation. With ``cfg.device_augment`` it yields
    ``collate_regions`` batches instead, finished by ``GPUAugment`` on the device.

    The stream starts at batch ``start_batch`` (a run resumed at epoch ``e`` passes
    ``e * iterations_per_epoch``) and is meant to be iterated once for a whole run, so DataLoader
    workers start once, not every epoch. With ``W`` workers, worker ``w`` makes batches
    ``start_batch + w``, ``+ W``, ... - the order in which a DataLoader collects them.
    """

    def __init__(self, root: str | os.PathLike, case_ids: Sequence[str], cfg: LoaderConfig, *, seed: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self._corpus = _CorpusHandle(root)
        self.case_ids = _check_cases(self._corpus, case_ids, f"training loader over {root}")
        self.cfg = cfg
        self.rank, self.world_size, self.start_batch = int(rank), int(world_size), int(start_batch)
        self._bad: set[str] = set()

    def _sample(self, rng: np.random.Generator, ws: Workspace, out: dict[str, torch.Tensor] | None
                ) -> tuple[str, dict[str, Any]]:
        """Draw a case and a patch of it; an unreadable case is skipped (with a warning) from then on."""
        corpus = self._corpus.get()
        patch = self.cfg.patch_size
        failures = 0
        while True:
            case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
            if case_id in self._bad:
                continue
            try:
                image = corpus.image(case_id)
                if image.ndim != 4 or image.shape[0] != 1:
                    raise ValueError(f"expected a (1, X, Y, Z) image, got shape {tuple(image.shape)}")
                masks = _masks(corpus, case_id, self.cfg.masks, image.shape)
                params = draw_params(rng, image.shape[1:], patch, self.cfg.augment)
                if self.cfg.device_augment:
                    return case_id, sample_region(image, params, patch, masks)
                return case_id, sample_patch(image, params, patch, masks, workspace=ws, out=out)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                # one unreadable case must not end a training run
                self._bad.add(case_id)
                failures += 1
                warnings.warn(f"skipping case {case_id!r} of {self._corpus.root}: {e}", stacklevel=2)
                if len(self._bad) == len(self.case_ids) or failures > _MAX_CONSECUTIVE_FAILURES:
                    raise RuntimeError(f"{self._corpus.root}: {len(self._bad)} cases failed to load; "
                                       f"last: {case_id!r}: {e}") from e

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker_id, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        ws = Workspace()
        b, patch = self.cfg.batch_size, self.cfg.patch_size
        keys = [MASK_KINDS[k] for k in self.cfg.masks]
        for index in itertools.count(self.start_batch + worker_id, n_workers):
            rng = np.random.default_rng(batch_seed(self.seed, self.rank, index))
            if self.cfg.device_augment:
                samples = []
                for _ in range(b):
                    case_id, sample = self._sample(rng, ws, None)
                    samples.append({**sample, "case_id": case_id})
                yield collate_regions(samples, keys)
                continue
            batch: dict[str, Any] = {"x": batch_tensor((b, 1, *patch), torch.float32)}
            for key in keys:
                batch[key] = batch_tensor((b, 1, *patch), torch.uint8)
            ids = []
            for i in range(b):
                case_id, _ = self._sample(rng, ws, {k: batch[k][i] for k in ("x", *keys)})
                ids.append(case_id)
            batch["case_ids"] = ids
            yield batch


class ValPatchDataset(Dataset):
    """Fixed, unaugmented validation patches (this rank's share), the same in every epoch.

    With ``num_patches > 0`` (the trainer passes ``train.val_iterations`` x the validation batch)
    the rank gets exactly that many patches: global patch ``k`` (``k = rank, rank + world_size,
    ...``) is patch ``k // n`` of case ``order[k % n]``, where ``order`` is a permutation of the
    ``n`` cases drawn from ``seed`` - a fixed budget spread over the held-out cases, whatever their
    number. With ``num_patches = 0`` every case (rank-strided) gives ``cfg.val_patches_per_case``.

    Patch 0 of a case is its centre crop; patch ``j > 0`` is a crop at a centre drawn from
    ``(seed, case index, j)``, so every run and every worker sees the same patches.
    Items are ``{"x": float32 (1, *P), <mask key>..., "case_id": str}``.
    """

    def __init__(self, root: str | os.PathLike, case_ids: Sequence[str], cfg: LoaderConfig, *, seed: int,
                 rank: int = 0, world_size: int = 1, num_patches: int = 0) -> None:
        super().__init__()
        if num_patches < 0:
            raise ValueError(f"num_patches must be >= 0, got {num_patches}")
        self._corpus = _CorpusHandle(root)
        ids = _check_cases(self._corpus, case_ids, f"validation loader over {root}")
        self.cfg = cfg
        self.seed = int(seed)
        if num_patches:
            n = len(ids)
            order = np.random.default_rng(np.random.SeedSequence([self.seed, 2])).permutation(n)
            self.items = [(int(order[k % n]), ids[int(order[k % n])], k // n)
                          for k in range(rank, num_patches * world_size, world_size)]
        else:
            # every rank validates a disjoint share (rank-strided); a rank may get none if cases < ranks
            self.items = [(i, c, j) for i, c in enumerate(ids) if i % world_size == rank
                          for j in range(cfg.val_patches_per_case)]
        self._ws: Workspace | None = None

    def __len__(self) -> int:
        return len(self.items)

    def params(self, index: int, shape: Sequence[int]) -> PatchParams:
        """Where item ``index`` is cropped from a volume of spatial ``shape``."""
        case_index, _, j = self.items[index]
        p = np.asarray(self.cfg.patch_size, dtype=np.float64)
        if j == 0:
            lo = np.floor((np.asarray(shape) - p) / 2)
            centre = lo + (p - 1) / 2
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, case_index, j]))
            centre = draw_centre(rng, shape, self.cfg.patch_size)
        return PatchParams(tuple(float(c) for c in centre))  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        _, case_id, _ = self.items[index]
        corpus = self._corpus.get()
        if self._ws is None:
            self._ws = Workspace()
        image = corpus.image(case_id)
        masks = _masks(corpus, case_id, self.cfg.masks, image.shape)
        sample: dict[str, Any] = sample_patch(image, self.params(index, image.shape[1:]), self.cfg.patch_size,
                                              masks, workspace=self._ws)
        sample["case_id"] = case_id
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ws"] = None
        return state

