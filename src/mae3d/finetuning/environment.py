"""Point nnU-Net v2 at mae3d-managed folders and worker counts, for the duration of one call.

nnU-Net reads its folders from environment variables: ``nnunetv2.paths`` (2.8.1) wraps
``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` in objects that look the variable up
*every time* a path is used, and ``get_allowed_n_proc_DA()`` reads ``nnUNet_n_proc_DA`` each time a
trainer builds its data loaders. So setting ``os.environ`` inside mae3d's process, around the nnU-Net
calls, is enough - also for nnU-Net's ``spawn`` worker processes, which inherit the environment at
start. :func:`nnunet_environment` sets them from mae3d's config and restores the previous values
afterwards; the variables are an implementation detail, never a user-facing switch.

``nnUNet_def_n_proc`` is different: nnU-Net copies it into the module constant
``default_num_processes`` at import time. The final validation (export pool + metric pool) reads that
constant from the trainer module, so :func:`export_processes` rebinds it there for the duration of
the validation and restores it.

nnU-Net always uses ``multiprocessing.get_context("spawn").Pool(n)`` (fingerprint, preprocessing,
validation export, metrics), even for ``n == 1``; every spawned interpreter re-imports torch and
nnU-Net (10-30 s on a busy 2-core machine) and re-imports the caller's ``__main__``.
:func:`in_process_pools` lets those modules get a thread pool instead (same ``starmap_async`` /
``_pool`` interface), used by mae3d when one worker is configured.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import multiprocessing.pool
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["export_processes", "in_process_pools", "nnunet_environment"]


@contextlib.contextmanager
def nnunet_environment(*, raw: Path | None = None, preprocessed: Path | None = None,
                       results: Path | None = None, da_workers: int | None = None,
                       compile_network: bool = False) -> Iterator[None]:
    """Set nnU-Net's folder / worker / compile variables inside this block, then restore them.

    Args:
        raw: folder containing the ``DatasetXXX_Name`` raw dataset (``nnUNet_raw``).
        preprocessed: mae3d's preprocessed root (``nnUNet_preprocessed``).
        results: where trained model folders go (``nnUNet_results``).
        da_workers: data-augmentation worker processes (``nnUNet_n_proc_DA``; 0 = in-process).
        compile_network: ``nnUNet_compile`` (nnU-Net only compiles on CUDA anyway).
    """
    values: dict[str, str] = {"nnUNet_compile": "t" if compile_network else "f"}
    folders = (("nnUNet_raw", raw), ("nnUNet_preprocessed", preprocessed), ("nnUNet_results", results))
    for name, path in folders:
        if path is not None:
            values[name] = str(Path(path).resolve())
    if da_workers is not None:
        values["nnUNet_n_proc_DA"] = str(int(da_workers))
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def export_processes(n: int) -> Iterator[None]:
    """Make nnU-Net's final validation use ``n`` export / metric processes instead of 8.

    Rebinds ``default_num_processes`` in ``nnunetv2.training.nnUNetTrainer.nnUNetTrainer`` (read by
    ``perform_actual_validation`` at call time) and restores it on exit.
    """
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    old = trainer_module.default_num_processes
    trainer_module.default_num_processes = int(n)
    try:
        yield
    finally:
        trainer_module.default_num_processes = old


# nnU-Net modules that start their worker pools with multiprocessing.get_context("spawn").Pool(n)
_POOL_MODULES = (
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor",
    "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnunetv2.evaluation.evaluate_predictions",
)


class _ThreadPoolContext:
    """Stands in for a multiprocessing context whose ``Pool`` is a thread pool in this process."""

    @staticmethod
    def Pool(processes: int | None = None, *args: object, **kwargs: object
             ) -> multiprocessing.pool.ThreadPool:
        return multiprocessing.pool.ThreadPool(processes)


class _InProcessMultiprocessing:
    """``multiprocessing`` look-alike: ``get_context()`` yields thread pools, the rest is the real module."""

    @staticmethod
    def get_context(method: str | None = None) -> _ThreadPoolContext:
        return _ThreadPoolContext()

    def __getattr__(self, name: str) -> object:
        return getattr(multiprocessing, name)


@contextlib.contextmanager
def in_process_pools(enabled: bool = True) -> Iterator[None]:
    """Inside this block nnU-Net's fingerprint / preprocessing / export / metric pools are thread pools.

    Does nothing when ``enabled`` is False (nnU-Net then spawns processes as usual).
    """
    if not enabled:
        yield
        return
    modules = [importlib.import_module(name) for name in _POOL_MODULES]
    previous = [m.multiprocessing for m in modules]
    shim = _InProcessMultiprocessing()
    for m in modules:
        m.multiprocessing = shim
    try:
        yield
    finally:
        for m, old in zip(modules, previous, strict=True):
            m.multiprocessing = old
