"""Cells of a benchmark grid (method x dataset x fold x seed): enumeration, ``--only`` filters, results.

A cell's result is ``OUT/cells/<method>/<dataset>/fold_<k>/seed_<s>/result.json``, written atomically
once the cell finished (``status: ok``) or failed (``status: failed`` with the error). It carries a
``cell_key``: a hash of everything that defines the cell (method, dataset, split, budget, evaluation
options, fold, seed; not the device), so a rerun with a changed spec never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mae3d.benchmark.spec import BenchmarkSpec, SpecError
from mae3d.io.atomic import read_json

__all__ = ["CELLS_DIR", "RESULT_NAME", "Cell", "cell_key", "enumerate_cells", "load_results", "parse_only"]

CELLS_DIR = "cells"
RESULT_NAME = "result.json"
RESULT_SCHEMA = 1
_ONLY_KEYS = ("method", "dataset", "fold", "seed", "role")


@dataclass(frozen=True)
class Cell:
    """One (method, dataset, fold, seed) of the grid."""

    method: str
    dataset: str
    fold: int
    seed: int

    def rel_dir(self) -> Path:
        """``cells/<method>/<dataset>/fold_<k>/seed_<s>`` (relative to the benchmark output)."""
        return Path(CELLS_DIR) / self.method / self.dataset / f"fold_{self.fold}" / f"seed_{self.seed}"

    def label(self) -> str:
        return f"{self.method} / {self.dataset} / fold {self.fold} / seed {self.seed}"


def parse_only(items: Iterable[str]) -> dict[str, set[str]]:
    """``--only`` filters: ``method=S3D,MAE,dataset=brain`` (a value without ``=`` adds to the previous key).

    Repeated options combine. Keys: method, dataset, fold, seed, role.
    """
    out: dict[str, set[str]] = {}
    for item in items:
        key: str | None = None
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            if "=" in part:
                key, value = (s.strip() for s in part.split("=", 1))
                if key not in _ONLY_KEYS:
                    raise SpecError(f"--only: unknown key {key!r}; valid: {', '.join(_ONLY_KEYS)}")
            elif key is None:
                raise SpecError(f"--only: {part!r} is not of the form key=value")
            else:
                value = part
            out.setdefault(key, set()).add(value)
    return out


def enumerate_cells(spec: BenchmarkSpec, only: Mapping[str, set[str]] | None = None) -> list[Cell]:
    """Every cell of the grid in run order (dataset, fold, seed, method), filtered by ``only``.

    Raises:
        SpecError: a filter names a method / dataset / role that does not exist.
    """
    only = dict(only or {})
    valid = {"method": [m.name for m in spec.methods], "dataset": [d.name for d in spec.datasets],
             "role": ["dev", "test"]}
    for key, names in valid.items():
        unknown = sorted(only.get(key, set()) - set(names))
        if unknown:
            raise SpecError(f"--only: unknown {key} {unknown[0]!r}; valid: {', '.join(names)}")
    cells = []
    for ds in spec.datasets:
        if "dataset" in only and ds.name not in only["dataset"]:
            continue
        if "role" in only and ds.role not in only["role"]:
            continue
        for fold in spec.folds(ds):
            if "fold" in only and str(fold) not in only["fold"]:
                continue
            for seed in spec.seeds:
                if "seed" in only and str(seed) not in only["seed"]:
                    continue
                for m in spec.methods:
                    if "method" in only and m.name not in only["method"]:
                        continue
                    cells.append(Cell(m.name, ds.name, fold, seed))
    return cells


def _method_definition(spec: BenchmarkSpec, name: str) -> dict[str, Any]:
    m = spec.method(name)
    d: dict[str, Any] = {"checkpoint": str(m.checkpoint) if m.checkpoint else None, "baseline": m.baseline,
                         "finetune": list(m.finetune)}
    if m.pretrain is not None:
        corpus = spec.corpora[m.pretrain.corpus]
        d["pretrain"] = {"overrides": list(m.pretrain.overrides),
                         "corpus": {"embedded": corpus.embedded, "exclude": sorted(corpus.exclude),
                                    "manifest": str(corpus.manifest) if corpus.manifest else None,
                                    "prepared": str(corpus.prepared) if corpus.prepared else None,
                                    "prepare": list(corpus.prepare)}}
    if m.plans_from is not None:
        d["plans_from"] = _method_definition(spec, m.plans_from)
    return d


def cell_key(spec: BenchmarkSpec, cell: Cell) -> str:
    """Hash of the cell's definition (see the module docstring)."""
    ds = spec.dataset(cell.dataset)
    definition = {
        "method": _method_definition(spec, cell.method),
        "dataset": {"path": str(ds.path) if ds.path else None, "embedded": ds.embedded, "spacing": ds.spacing,
                    "split": {"kind": ds.split.kind, "n_splits": ds.split.n_splits,
                              "train": ds.split.train, "test": ds.split.test},
                    "max_train_cases": ds.max_train_cases, "subset_seed": ds.subset_seed},
        "budget": list(spec.budget),
        "evaluation": {"mirroring": spec.evaluation.mirroring,
                       "tile_step_size": spec.evaluation.tile_step_size,
                       "tolerance_mm": spec.evaluation.tolerance_mm},
        "fold": cell.fold, "seed": cell.seed,
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def load_results(out: str | Path) -> list[dict[str, Any]]:
    """Every ``result.json`` under ``OUT/cells`` (finished and failed cells), in a stable order."""
    root = Path(out) / CELLS_DIR
    if not root.is_dir():
        return []
    results = []
    for path in sorted(root.glob(f"*/*/fold_*/seed_*/{RESULT_NAME}")):
        data = read_json(path)
        data["_path"] = str(path)
        results.append(data)
    return results
