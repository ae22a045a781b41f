"""Evaluate a folder of predicted segmentations against a folder of references (nnU-Net layout).

Cases are matched by file name (``<case><file_ending>`` in both folders). Before any metric is computed
every pair's header is checked: a missing prediction, or a shape / spacing that differs from the
reference, raises :class:`EvaluationInputError` listing every offending case, so a long evaluation never
dies half-way and never silently averages over fewer cases. Predictions without a reference are ignored
(and logged).

Per case and per class the metrics of :mod:`mae3d.evaluation.metrics` are computed (Dice, NSD at
``tolerance_mm``, HD95; see there for the surface definition and the empty-mask conventions). The result
is written as ``summary.json`` (per case, per class mean, mean over foreground classes; layout similar to
nnU-Net's ``summary.json``, keyed by label value) and ``metrics.csv`` (one row per case and class).

HD95 when exactly one of prediction / reference is empty is infinite: reported as ``null`` (JSON) or
``inf`` (CSV) with ``hd95_capped`` holding the value used in means -- the image diagonal in mm, or
``hd95_cap_mm`` if given. ``n_hd95_capped`` in the means says how many cases were capped.

Files are read with SimpleITK (nnU-Net's default reader), keeping integer labels and the on-disk voxel
grid: both files share it, so no reorientation is needed.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mae3d.evaluation.metrics import binary_metrics, image_diagonal_mm
from mae3d.io.atomic import read_json, write_json, write_text

__all__ = [
    "CaseResult",
    "ClassMetrics",
    "EvaluationConfig",
    "EvaluationInputError",
    "EvaluationResult",
    "evaluate_folders",
    "labels_from_dataset_json",
]

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
CSV_NAME = "metrics.csv"
_METRICS = ("dice", "nsd", "hd95")


class EvaluationInputError(ValueError):
    """Predictions / references / labels cannot be evaluated; the message names the files or cases."""


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run (``mae3d evaluate``)."""

    tolerance_mm: float = 1.0  # NSD tolerance
    file_ending: str = ".nii.gz"
    num_workers: int = 1  # processes; 1 = in this process
    hd95_cap_mm: float | None = None  # HD95 used in means when one mask is empty; None = image diagonal


@dataclass(frozen=True)
class ClassMetrics:
    """One class in one case. ``hd95`` may be ``inf``; ``hd95_capped`` is what the means use."""

    dice: float
    nsd: float
    hd95: float
    hd95_capped: float
    n_ref: int
    n_pred: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hd95"] = None if math.isinf(self.hd95) else self.hd95
        d["hd95_infinite"] = math.isinf(self.hd95)
        return d


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case, by label value."""

    case: str
    prediction_file: str
    reference_file: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    metrics: dict[int, ClassMetrics]


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_folders` computed.

    Attributes:
        labels: evaluated class name -> label value (foreground only).
        cases: per-case results (sorted by case id).
        mean: label value -> {dice, nsd, hd95 (capped), n_cases, n_hd95_capped}.
        foreground_mean: mean over classes of the per-class means.
    """

    labels: dict[str, int]
    tolerance_mm: float
    hd95_cap_mm: float | None
    cases: list[CaseResult]
    mean: dict[int, dict[str, float]] = field(default_factory=dict)
    foreground_mean: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean, self.foreground_mean = _aggregate(self.labels, self.cases)

    def _names(self) -> dict[int, str]:
        return {v: k for k, v in self.labels.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON form (written as ``summary.json``)."""
        names = self._names()
        return {
            "labels": dict(self.labels),
            "tolerance_mm": self.tolerance_mm,
            "hd95_cap": "image diagonal (mm)" if self.hd95_cap_mm is None else self.hd95_cap_mm,
            "n_cases": len(self.cases),
            "foreground_mean": dict(self.foreground_mean),
            "mean": {str(v): {"name": names[v], **m} for v, m in self.mean.items()},
            "metric_per_case": [
                {"case": c.case, "prediction_file": c.prediction_file, "reference_file": c.reference_file,
                 "shape": list(c.shape), "spacing": list(c.spacing),
                 "metrics": {str(v): {"name": names[v], **m.to_json()} for v, m in c.metrics.items()}}
                for c in self.cases
            ],
        }

    def to_csv(self) -> str:
        """One row per case and class (``metrics.csv``); infinite HD95 is written as ``inf``."""
        names = self._names()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["case", "label", "name", "dice", "nsd", "hd95", "hd95_capped", "n_ref", "n_pred"])
        for c in self.cases:
            for v, m in c.metrics.items():
                w.writerow([c.case, v, names[v], repr(m.dice), repr(m.nsd), repr(m.hd95), repr(m.hd95_capped),
                            m.n_ref, m.n_pred])
        return buf.getvalue()

    def write(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
        """Atomically write ``summary.json`` and ``metrics.csv`` into ``out_dir``."""
        out = Path(out_dir)
        _check_writable(out, overwrite)
        summary = write_json(out / SUMMARY_NAME, self.to_dict(), overwrite=overwrite)
        table = write_text(out / CSV_NAME, self.to_csv(), overwrite=overwrite)
        return summary, table

    def format_summary(self) -> str:
        """A fixed-width table: per class means and the foreground mean."""
        names = self._names()
        tol = f"NSD@{self.tolerance_mm:g}mm"
        rows = [("label", "name", "Dice", tol, "HD95 [mm]", "capped")]
        for v, m in self.mean.items():
            rows.append((str(v), names[v], f"{m['dice']:.4f}", f"{m['nsd']:.4f}", f"{m['hd95']:.2f}",
                         f"{m['n_hd95_capped']}/{m['n_cases']}"))
        fm = self.foreground_mean
        rows.append(("", "mean", f"{fm['dice']:.4f}", f"{fm['nsd']:.4f}", f"{fm['hd95']:.2f}", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        rule = "-" * max(len(line) for line in lines)
        lines.insert(1, rule)
        lines.insert(len(lines) - 1, rule)
        return f"{len(self.cases)} cases\n" + "\n".join(lines)


def _aggregate(labels: Mapping[str, int], cases: Sequence[CaseResult]
               ) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    mean: dict[int, dict[str, float]] = {}
    for v in sorted(labels.values()):
        ms = [c.metrics[v] for c in cases]
        mean[v] = {
            "dice": float(np.mean([m.dice for m in ms])) if ms else math.nan,
            "nsd": float(np.mean([m.nsd for m in ms])) if ms else math.nan,
            "hd95": float(np.mean([m.hd95_capped for m in ms])) if ms else math.nan,
            "n_cases": len(ms),
            "n_hd95_capped": sum(math.isinf(m.hd95) for m in ms),
        }
    fg = {k: float(np.mean([m[k] for m in mean.values()])) if mean else math.nan for k in _METRICS}
    return mean, fg


# --------------------------------------------------------------------------------------------- labels
def _check_labels(labels: Mapping[str, Any], source: str) -> tuple[dict[str, int], int | None]:
    """Split a dataset.json-style label map into foreground classes and the ignore label."""
    out: dict[str, int] = {}
    ignore: int | None = None
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise EvaluationInputError(
                f"{source}: label {name!r} is region-based ({list(value)}); region-based evaluation is not "
                "supported, evaluate the plain labels instead")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise EvaluationInputError(f"{source}: label {name!r} has value {value!r}; "
                                       "expected an integer >= 0")
        if name == "ignore":
            ignore = int(value)
        elif int(value) != 0:
            out[str(name)] = int(value)
    if len(set(out.values())) != len(out):
        raise EvaluationInputError(f"{source}: two label names share one value: {out}")
    if not out:
        raise EvaluationInputError(f"{source}: no foreground label to evaluate")
    return out, ignore


def labels_from_dataset_json(path: str | os.PathLike) -> dict[str, Any]:
    """The ``labels`` map of an nnU-Net ``dataset.json`` ({"background": 0, "x": 1, ...}), checked.

    Region-based labels (lists of values) raise :class:`EvaluationInputError`.
    """
    data = read_json(path)
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        raise EvaluationInputError(f"{path}: no 'labels' mapping (expected nnU-Net dataset.json format)")
    _check_labels(labels, str(path))
    return labels


# --------------------------------------------------------------------------------------------- files
def _header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, spacing) in numpy axis order, without reading the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1]
        raise EvaluationInputError(f"{path}: cannot read image header ({reason})") from None
    return tuple(reader.GetSize())[::-1], tuple(float(s) for s in reader.GetSpacing())[::-1]


def _read_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise EvaluationInputError(f"{path}: segmentation contains non-integer values")
        array = array.astype(np.int64)
    return array, tuple(float(s) for s in image.GetSpacing())[::-1]


def _pair_files(pred_dir: Path, gt_dir: Path, file_ending: str) -> list[tuple[str, Path, Path]]:
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: reference folder not found")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    refs = sorted(p for p in gt_dir.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not refs:
        raise EvaluationInputError(f"{gt_dir}: no reference files ending in {file_ending!r}")
    pairs = [(p.name[: -len(file_ending)], pred_dir / p.name, p) for p in refs]
    missing = [case for case, pred, _ in pairs if not pred.is_file()]
    if missing:
        raise EvaluationInputError(f"{pred_dir}: missing predictions for {len(missing)} of {len(pairs)} "
                                   f"cases: {', '.join(missing)}")
    preds = {p.name for p in pred_dir.iterdir() if p.name.endswith(file_ending)}
    extra = sorted(preds - {p.name for p in refs})
    if extra:
        log.warning("%s: %d predictions have no reference and are ignored: %s", pred_dir, len(extra),
                    ", ".join(extra))
    problems = []
    for _case, pred, ref in pairs:
        (ps, pp), (rs, rp) = _header(pred), _header(ref)
        if ps != rs:
            problems.append(f"{pred}: shape {ps} differs from reference {ref} {rs}")
        elif not np.allclose(pp, rp, rtol=1e-4, atol=1e-5):
            problems.append(f"{pred}: spacing {pp} differs from reference {ref} {rp}")
    if problems:
        raise EvaluationInputError(f"{len(problems)} prediction(s) do not match their reference: "
                                   + "; ".join(problems))
    return pairs


def _unique_labels(path: Path) -> list[int]:
    array, _ = _read_labels(path)
    return [int(v) for v in np.unique(array)]


def _evaluate_case(case: str, pred_path: Path, ref_path: Path, labels: Sequence[int], ignore: int | None,
                   tolerance_mm: float, hd95_cap_mm: float | None) -> CaseResult:
    pred, spacing = _read_labels(pred_path)
    ref, _ = _read_labels(ref_path)
    keep = None if ignore is None else ref != ignore  # nnU-Net: voxels with the ignore label do not count
    cap = image_diagonal_mm(ref.shape, spacing) if hd95_cap_mm is None else float(hd95_cap_mm)
    metrics: dict[int, ClassMetrics] = {}
    for v in labels:
        p, r = pred == v, ref == v
        if keep is not None:
            p &= keep
        m = binary_metrics(p, r, spacing, tolerance_mm)
        metrics[v] = ClassMetrics(dice=m.dice, nsd=m.nsd, hd95=m.hd95,
                                  hd95_capped=cap if math.isinf(m.hd95) else m.hd95,
                                  n_ref=m.n_ref, n_pred=m.n_pred)
    return CaseResult(case=case, prediction_file=str(pred_path), reference_file=str(ref_path),
                      shape=tuple(int(n) for n in ref.shape), spacing=spacing, metrics=metrics)


class _Runner:
    """Maps a function over argument tuples, in this process or in one pool of spawned workers.

    One pool serves every phase of an evaluation: starting interpreters dominates for small data.
    """

    def __init__(self, num_workers: int, n_tasks: int) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if num_workers > 1 and n_tasks > 1:
            # spawn: a fresh interpreter per worker (forking after torch/threads started is unsafe)
            self._pool = ProcessPoolExecutor(max_workers=min(num_workers, n_tasks),
                                             mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn: Any, args: Iterable[tuple[Any, ...]]) -> list[Any]:
        args = list(args)
        if self._pool is None or not args:
            return [fn(*a) for a in args]
        return list(self._pool.map(fn, *zip(*args, strict=True)))

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _check_writable(out: Path, overwrite: bool) -> None:
    if not overwrite:
        existing = [p for p in (out / SUMMARY_NAME, out / CSV_NAME) if p.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists (pass overwrite to replace it)")


def evaluate_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                     labels: Mapping[str, Any] | None = None, tolerance_mm: float = 1.0,
                     file_ending: str = ".nii.gz", num_workers: int = 1, *,
                     hd95_cap_mm: float | None = None, output_dir: str | os.PathLike | None = None,
                     overwrite: bool = False, write: bool = True) -> EvaluationResult:
    """Evaluate every reference case in ``gt_dir`` against its prediction in ``pred_dir``.

    Args:
        pred_dir: predicted segmentations (``<case><file_ending>``).
        gt_dir: reference segmentations, same names.
        labels: dataset.json ``labels`` map (name -> value; ``background`` and ``ignore`` are not
            evaluated, voxels with the ignore label are excluded); None: every non-zero value present
            in any reference, named by its value.
        tolerance_mm: NSD tolerance in mm.
        file_ending: file suffix of both folders.
        num_workers: worker processes (1 = sequential in this process).
        hd95_cap_mm: HD95 used in the means when exactly one mask is empty; None = image diagonal.
        output_dir: where ``summary.json`` / ``metrics.csv`` go (default ``pred_dir``).
        overwrite: replace existing ``summary.json`` / ``metrics.csv``.
        write: False = only return the result (nothing is written).

    Raises:
        EvaluationInputError: missing predictions, shape/spacing mismatches, bad labels.
        FileExistsError: outputs exist and ``overwrite`` is False (checked before computing).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    out = Path(output_dir) if output_dir is not None else pred_dir
    if write:
        _check_writable(out, overwrite)
    pairs = _pair_files(pred_dir, gt_dir, file_ending)
    if labels is not None:
        label_map, ignore = _check_labels(labels, "labels")
    with _Runner(num_workers, len(pairs)) as runner:
        if labels is None:
            found = runner.map(_unique_labels, [(ref,) for _, _, ref in pairs])
            values = sorted(set().union(*found) - {0})
            if not values:
                raise EvaluationInputError(f"{gt_dir}: references contain no foreground label")
            label_map, ignore = {str(v): v for v in values}, None
        values = sorted(label_map.values())
        cases = runner.map(_evaluate_case, [(case, pred, ref, values, ignore, tolerance_mm, hd95_cap_mm)
                                            for case, pred, ref in pairs])
    result = EvaluationResult(labels=dict(sorted(label_map.items(), key=lambda kv: kv[1])),
                              tolerance_mm=float(tolerance_mm), hd95_cap_mm=hd95_cap_mm, cases=cases)
    if write:
        result.write(out, overwrite=overwrite)
    return result
