"""``run_benchmark``: every cell of a spec through fine-tune -> predict -> evaluate, resumably.

Output layout (``OUT``)::

    benchmark.json                         the spec as run (the report reads it)
    data/raw/<dataset>/DatasetXXX_Name     embedded datasets, built once
    data/corpora/<corpus>/                 embedded corpus manifest + prepared corpus
    pretrain/<method>/                     pre-training runs of recipe methods (+ <method>.log)
    work/<dataset>/nnUNet_preprocessed/    plans + preprocessed data + splits_final.json, shared by cells
    work/<dataset>/test/fold_<k>/          links to the fold's test images / references
    cells/<method>/<dataset>/fold_<k>/seed_<s>/
        result.json                        written atomically when the cell finished or failed
        work/                              the fine-tuning output root (model folder, logs)
        pred/, eval/                       test predictions, summary.json + metrics.csv
        cell.log                           nnU-Net's console output

Resuming: a cell with ``result.json`` (status ok, same definition) is skipped; failed cells are retried;
a killed fine-tuning continues from its latest nnU-Net checkpoint (``finetune(..., resume=True)``), so a
killed run loses at most the cell in progress. One failing cell is recorded with its error and the grid
goes on.

Parallel cells (``workers`` > 1): the shared assets are made first, in this process (embedded datasets,
prepared corpora, nnU-Net plans and preprocessed data of every (dataset, method), so no two processes
write them at once); the pre-trainings of recipe methods then run side by side, and the cells after them,
each in its own worker process (spawned, with ``threads`` torch threads each; default: the cores divided
by the workers). A cell's result does not depend on ``workers``: the same seeds and the same files.

Seeds: each cell's fine-tuning runs with ``FinetuneConfig.seed`` = the cell's seed (network initialisation,
case sampling and, with in-process augmentation - ``da_workers=0``, the CPU default - the augmentation);
nnU-Net's augmentation worker processes (GPU) seed themselves, so there the batches are not repeatable.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mae3d.benchmark.assets import (
    checkpoint_for,
    dataset_dir,
    prepared_corpus,
    pretrained_checkpoint,
    redirect_output,
)
from mae3d.benchmark.cells import RESULT_NAME, RESULT_SCHEMA, Cell, cell_key, enumerate_cells
from mae3d.benchmark.spec import BenchmarkSpec, DatasetEntry, SpecError, finetune_config
from mae3d.benchmark.splits import FoldPlan, link_test_cases, resolve_folds, write_splits_final
from mae3d.config import apply_overrides, provenance, to_dict
from mae3d.io.atomic import read_json, write_json

__all__ = ["BENCHMARK_JSON", "RunSummary", "run_benchmark"]

log = logging.getLogger(__name__)

BENCHMARK_JSON = "benchmark.json"
PREPROCESSED_LINK = "nnUNet_preprocessed"


@dataclass
class RunSummary:
    """What one :func:`run_benchmark` call did."""

    out: Path
    cells: list[Cell] = field(default_factory=list)  # the selected grid
    skipped: list[Cell] = field(default_factory=list)  # finished before this call
    done: list[Cell] = field(default_factory=list)  # finished by this call
    failed: dict[Cell, str] = field(default_factory=dict)  # failed in this call: error line
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _DatasetContext:
    folder: Path
    preprocessed_root: Path
    folds: dict[int, FoldPlan]
    test_dirs: dict[int, tuple[Path, Path]]
    labels: dict[str, Any]


class _Assets:
    """Datasets and checkpoints, resolved once per run and only when a selected cell needs them."""

    def __init__(self, spec: BenchmarkSpec, out: Path, device: str) -> None:
        self.spec, self.out, self.device = spec, out, device
        self._datasets: dict[str, _DatasetContext | Exception] = {}
        self._checkpoints: dict[str, Path | Exception | None] = {}

    def dataset(self, name: str) -> _DatasetContext:
        if name not in self._datasets:
            try:
                self._datasets[name] = self._make_dataset(self.spec.dataset(name))
            except Exception as e:  # every cell of the dataset fails with this error
                self._datasets[name] = e
        value = self._datasets[name]
        if isinstance(value, Exception):
            raise value
        return value

    def _make_dataset(self, ds: DatasetEntry) -> _DatasetContext:
        from mae3d.evaluation.evaluate import labels_from_dataset_json
        from mae3d.finetuning.dataset_checks import dataset_name_of

        folder = dataset_dir(ds, self.out)
        n = ds.split.n_splits if ds.split.kind == "kfold" else 1
        plans = resolve_folds(folder, ds, tuple(range(n)))
        work = self.out / "work" / ds.name
        pre_root = work / PREPROCESSED_LINK
        pre_dataset = pre_root / dataset_name_of(folder)
        pre_dataset.mkdir(parents=True, exist_ok=True)
        write_splits_final(pre_dataset, ds, plans)
        test_dirs = {p.fold: link_test_cases(p, work / "test" / f"fold_{p.fold}") for p in plans
                     if p.fold in self.spec.folds(ds)}
        return _DatasetContext(folder=folder, preprocessed_root=pre_root, folds={p.fold: p for p in plans},
                               test_dirs=test_dirs, labels=labels_from_dataset_json(folder / "dataset.json"))

    def checkpoint(self, method: str) -> Path | None:
        if method not in self._checkpoints:
            try:
                self._checkpoints[method] = checkpoint_for(self.spec, self.spec.method(method), self.out,
                                                           self.device)
            except Exception as e:
                self._checkpoints[method] = e
        value = self._checkpoints[method]
        if isinstance(value, Exception):
            raise RuntimeError(f"checkpoint of method {method!r} unavailable: {type(value).__name__}: "
                               f"{value}") from value
        return value


def _link_preprocessed(work: Path, shared: Path) -> None:
    link = work / PREPROCESSED_LINK
    work.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() != shared.resolve():
            raise SpecError(f"{link}: points to {link.resolve()}, expected {shared}")
        return
    os.symlink(shared.resolve(), link, target_is_directory=True)


def _finished_model_dir(work: Path, dataset_name: str, fold: int) -> Path | None:
    found = sorted((work / dataset_name).glob(f"*__*__*/fold_{fold}/checkpoint_final.pth"))
    return found[0].parent.parent if len(found) == 1 else None


def _cell_config(spec: BenchmarkSpec, cell: Cell, device: str) -> Any:
    method = spec.method(cell.method)
    extra = [f"fold={cell.fold}", f"seed={cell.seed}", f"device={device}"]
    return apply_overrides(finetune_config(spec, method), extra)


def _run_cell(spec: BenchmarkSpec, cell: Cell, out: Path, assets: _Assets, device: str) -> dict[str, Any]:
    from mae3d.evaluation.evaluate import evaluate_folders
    from mae3d.evaluation.predict import predict
    from mae3d.finetuning import finetune
    from mae3d.finetuning.dataset_checks import dataset_name_of

    cell_dir = out / cell.rel_dir()
    t = time.monotonic()
    ds = assets.dataset(cell.dataset)  # built / pre-trained on first use, then cached
    plan = ds.folds[cell.fold]
    checkpoint = assets.checkpoint(cell.method)
    times: dict[str, float] = {"assets_s": time.monotonic() - t}
    cfg = _cell_config(spec, cell, device)
    work = cell_dir / "work"
    _link_preprocessed(work, ds.preprocessed_root)

    t = time.monotonic()
    model_dir = _finished_model_dir(work, dataset_name_of(ds.folder), cell.fold)
    if model_dir is None:
        with redirect_output(cell_dir / "cell.log"):
            model_dir = finetune(ds.folder, checkpoint, work, cfg, resume=True)
    times["finetune_s"] = time.monotonic() - t

    t = time.monotonic()
    images, labels = ds.test_dirs[cell.fold]
    with redirect_output(cell_dir / "cell.log"):
        pred = predict(model_dir, images, cell_dir / "pred", mirroring=spec.evaluation.mirroring,
                       device=device, tile_step_size=spec.evaluation.tile_step_size, overwrite=True)
    times["predict_s"] = time.monotonic() - t

    t = time.monotonic()
    ev = evaluate_folders(pred, labels, labels=ds.labels, tolerance_mm=spec.evaluation.tolerance_mm,
                          output_dir=cell_dir / "eval", overwrite=True)
    times["evaluate_s"] = time.monotonic() - t

    names = {v: k for k, v in ev.labels.items()}
    per_case = {c.case: {names[v]: {"dice": m.dice, "nsd": m.nsd, "hd95": m.hd95_capped}
                         for v, m in c.metrics.items()} for c in ev.cases}
    return {
        "dice": ev.foreground_mean["dice"], "nsd": ev.foreground_mean["nsd"],
        "hd95": ev.foreground_mean["hd95"],
        "per_class": {names[v]: m for v, m in ev.mean.items()},
        "case_dice": {case: sum(m["dice"] for m in cls.values()) / len(cls)
                      for case, cls in per_case.items()},
        "per_case": per_case,
        "train_cases": list(plan.train), "val_cases": list(plan.val),
        "test_cases": [c.case_id for c in plan.test],
        "model_dir": str(model_dir), "checkpoint": str(checkpoint) if checkpoint else None,
        "finetune_config": to_dict(cfg), "timings": times,
    }


def _progress_line(i: int, n: int, cell: Cell, status: str, seconds: float, done_times: list[float],
                   remaining: int) -> str:
    eta = ""
    if done_times and remaining:
        eta = f" | ETA {sum(done_times) / len(done_times) * remaining / 60:.1f} min for {remaining} cells"
    return f"[{i}/{n}] {cell.label()}: {status} ({seconds:.0f} s){eta}"


def run_benchmark(spec: BenchmarkSpec, out: str | Path, *, only: Mapping[str, set[str]] | None = None,
                  device: str | None = None, threads: int = 0, workers: int = 1,
                  progress: Callable[[str], None] | None = print) -> RunSummary:
    """Run every selected cell of ``spec`` into ``out`` (resumable; see the module docstring).

    Args:
        spec: a validated spec (:func:`~mae3d.benchmark.spec.load_spec`).
        out: benchmark output folder.
        only: filters from :func:`~mae3d.benchmark.cells.parse_only` (method / dataset / fold / seed / role).
        device: cpu / cuda / auto (default: the spec's ``device``); not part of a cell's definition.
        threads: torch intra-op threads while the grid runs (0: leave torch's setting). On a shared CPU
            use 1: more threads than free cores make every step several times slower (OpenMP spin-waits).
            With ``workers`` > 1: threads per worker (0: the cores divided by the workers, at least 1).
        workers: cells (and pre-trainings) run at once in separate processes (see the module docstring).
        progress: called with one line per cell event (None: quiet).

    Raises:
        SpecError: a filter names nothing, or a finished cell under ``out`` was run with another definition.
    """
    import torch

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // workers)
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _run_grid(spec, Path(out), only, device, progress or (lambda _msg: None), workers, threads)
    finally:
        torch.set_num_threads(previous)


def _execute(spec: BenchmarkSpec, cell: Cell, out: Path, assets: _Assets, dev: str, key: str
             ) -> dict[str, Any]:
    """Run one cell and write its ``result.json`` (status ok or failed); returns the record."""
    t = time.monotonic()
    record: dict[str, Any] = {"schema_version": RESULT_SCHEMA, "cell_key": key,
                              "method": cell.method, "dataset": cell.dataset,
                              "role": spec.dataset(cell.dataset).role, "fold": cell.fold,
                              "seed": cell.seed, "device": dev,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        record.update(_run_cell(spec, cell, out, assets, dev))
        record["status"] = "ok"
    except Exception as e:  # one bad cell is recorded and the grid goes on
        log.debug("cell %s failed", cell.label(), exc_info=True)
        record.update(status="failed", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8))
    record["seconds"] = time.monotonic() - t
    record["provenance"] = provenance()
    write_json(out / cell.rel_dir() / RESULT_NAME, record)
    return record


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _cell_worker(spec: BenchmarkSpec, cell: Cell, out: Path, dev: str, key: str) -> dict[str, Any]:
    """A cell in a worker process: its assets are on disk already (made by the parent)."""
    return _execute(spec, cell, out, _Assets(spec, out, dev), dev, key)


def _pretrain_worker(spec: BenchmarkSpec, method: str, out: Path, dev: str, threads: int) -> str:
    """One pre-training in a worker process, with ``threads`` torch threads (the worker's own count is
    restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return str(pretrained_checkpoint(spec, spec.method(method), out, dev))
    finally:
        torch.set_num_threads(previous)


def _prepare_shared(spec: BenchmarkSpec, cells: list[Cell], out: Path, assets: _Assets, dev: str,
                    pool: ProcessPoolExecutor, say: Callable[[str], None], threads: int, workers: int
                    ) -> None:
    """Make every asset the cells share before they run in parallel (errors stay with the assets and
    fail the cells that need them). Pre-trainings share the workers' threads: one pre-training alone
    gets all of them."""
    from mae3d.finetuning.planning import prepare_plans
    from mae3d.finetuning.pretrained import read_checkpoint

    for name in dict.fromkeys(c.dataset for c in cells):
        try:
            assets.dataset(name)
        except Exception as e:
            say(f"dataset {name}: {type(e).__name__}: {e}")
    methods = list(dict.fromkeys(c.method for c in cells))
    needed = list(dict.fromkeys([*methods, *(spec.method(m).plans_from for m in methods
                                             if spec.method(m).plans_from)]))
    recipes = [m for m in needed if spec.method(m).pretrain is not None
               and not (out / "pretrain" / m / "checkpoint_final.pth").is_file()]
    for corpus in dict.fromkeys(spec.method(m).pretrain.corpus for m in recipes):  # type: ignore[union-attr]
        prepared_corpus(spec.corpora[corpus], out)
    if recipes:
        each = max(1, threads * workers // len(recipes))
        say(f"pre-training {', '.join(recipes)} side by side ({each} torch threads each)"
            if len(recipes) > 1 else f"pre-training {recipes[0]} ({each} torch threads)")
        futures = {pool.submit(_pretrain_worker, spec, m, out, dev, each): m for m in recipes}
        for f in as_completed(futures):
            try:
                assets._checkpoints[futures[f]] = Path(f.result())
                say(f"pre-training {futures[f]}: done")
            except Exception as e:
                assets._checkpoints[futures[f]] = e
                say(f"pre-training {futures[f]}: FAILED: {type(e).__name__}: {e}")
    for cell in {(c.dataset, c.method): c for c in cells}.values():
        try:
            ds = assets.dataset(cell.dataset)
            checkpoint = assets.checkpoint(cell.method)
            cfg = _cell_config(spec, cell, dev)
            with redirect_output(out / "work" / cell.dataset / "prepare_plans.log"):
                prepare_plans(ds.folder, ds.preprocessed_root, cfg,
                              read_checkpoint(checkpoint) if checkpoint is not None else None)
        except Exception as e:  # the cell itself will fail with the same error, recorded there
            log.debug("preparing %s failed: %s", cell.label(), e)


def _run_grid(spec: BenchmarkSpec, out: Path, only: Mapping[str, set[str]] | None, device: str | None,
              say: Callable[[str], None], workers: int = 1, threads: int = 0) -> RunSummary:
    from mae3d.utils.device import resolve_device

    start = time.monotonic()
    dev = resolve_device(device or spec.device)
    cells = enumerate_cells(spec, only)
    summary = RunSummary(out=out, cells=cells)
    keys = {c: cell_key(spec, c) for c in cells}
    todo = []
    for c in cells:
        path = out / c.rel_dir() / RESULT_NAME
        if not path.is_file():
            todo.append(c)
            continue
        old = read_json(path)
        if old.get("cell_key") != keys[c]:
            raise SpecError(f"{path}: this cell was run with another definition (spec changed: method, "
                            "dataset, split, budget or evaluation); use another output folder or delete "
                            "the cell")
        if old.get("status") == "ok":
            summary.skipped.append(c)
        else:
            todo.append(c)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / BENCHMARK_JSON, {"spec": spec.to_dict(),
                                      "source": str(spec.source) if spec.source else None,
                                      "provenance": provenance()})
    say(f"benchmark {spec.name}: {len(cells)} cells ({len(summary.skipped)} finished, {len(todo)} to run) "
        f"on {dev} -> {out}")
    assets = _Assets(spec, out, dev)
    times: list[float] = []
    n_before = len(summary.skipped)

    def finished(i: int, cell: Cell, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            summary.done.append(cell)
            # the ETA counts the cell's own work, not the one-off dataset builds and pre-trainings
            times.append(record["seconds"] - record["timings"].get("assets_s", 0.0))
            status = f"Dice {record['dice']:.4f}"
        else:
            summary.failed[cell] = record["error"]
            status = f"FAILED: {record['error']}"
        say(_progress_line(n_before + i, len(cells), cell, status, record["seconds"], times,
                           (len(todo) - i) // max(1, workers)))

    if workers > 1 and todo:
        ctx = multiprocessing.get_context("spawn")  # fork after torch/OpenMP started can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            _prepare_shared(spec, todo, out, assets, dev, pool, say, threads, workers)
            say(f"running {len(todo)} cells, {workers} at a time ({threads} torch threads each)")
            futures = {pool.submit(_cell_worker, spec, c, out, dev, keys[c]): c for c in todo}
            for i, f in enumerate(as_completed(futures), 1):
                cell = futures[f]
                try:
                    record = f.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    record = {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": 0.0}
                    write_json(out / cell.rel_dir() / RESULT_NAME, {
                        "schema_version": RESULT_SCHEMA, "cell_key": keys[cell], "method": cell.method,
                        "dataset": cell.dataset, "role": spec.dataset(cell.dataset).role, "fold": cell.fold,
                        "seed": cell.seed, "device": dev, **record})
                finished(i, cell, record)
    else:
        for i, cell in enumerate(todo, 1):
            say(f"[{n_before + i}/{len(cells)}] {cell.label()}: running")
            finished(i, cell, _execute(spec, cell, out, assets, dev, keys[cell]))
    summary.seconds = time.monotonic() - start
    say(f"benchmark {spec.name}: {len(summary.done)} done, {len(summary.skipped)} already finished, "
        f"{len(summary.failed)} failed in {summary.seconds / 60:.1f} min")
    return summary
