"""Corpus fingerprint: spacings, shapes and intensity statistics over the prepared cases.

The median spacing for ``spacing_mode="median"`` is taken from image headers before any work
(nnssl's fingerprint also stores only spacings); the full fingerprint written to
``fingerprint.json`` summarises the finished cases' properties, so it covers every part of a
corpus prepared in several runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["corpus_fingerprint", "median_spacing"]


def median_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """Per-axis median of ``spacings`` (nnssl's "median" target spacing)."""
    if len(spacings) == 0:
        raise ValueError("no valid image to compute a median spacing from")
    med = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    return (float(med[0]), float(med[1]), float(med[2]))


def _summary(a: np.ndarray) -> dict[str, list[float]]:
    return {k: np.percentile(a, q, axis=0).round(4).tolist()
            for k, q in (("min", 0), ("p05", 5), ("median", 50), ("p95", 95), ("max", 100))}


def corpus_fingerprint(properties: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-case geometry/intensity lists plus corpus summaries, from case properties."""
    ids, spacings, shapes, stored, means, stds, p_lo, p_hi = [], [], [], [], [], [], [], []
    modalities: Counter[str] = Counter()
    for p in properties:
        ids.append(p["image_id"])
        spacings.append(p["original_spacing"])
        shapes.append(p["shape_after_crop"])
        stored.append(p["shape"])
        it = p["intensity"]
        means.append(it["mean"])
        stds.append(it["std"])
        p_lo.append(it["percentile_00_5"])
        p_hi.append(it["percentile_99_5"])
        modalities[str(p.get("modality"))] += 1
    out: dict[str, Any] = {"n_cases": len(ids), "modalities": dict(sorted(modalities.items()))}
    if ids:
        out["summary"] = {
            "original_spacing": _summary(np.asarray(spacings)),
            "shape_after_crop": _summary(np.asarray(shapes)),
            "stored_shape": _summary(np.asarray(stored)),
            "intensity_mean": _summary(np.asarray(means)),
            "intensity_std": _summary(np.asarray(stds)),
            "intensity_percentile_00_5": _summary(np.asarray(p_lo)),
            "intensity_percentile_99_5": _summary(np.asarray(p_hi)),
        }
    out["cases"] = {"image_id": ids, "original_spacing": spacings, "shape_after_crop": shapes,
                    "stored_shape": stored, "intensity_mean": means, "intensity_std": stds}
    return out
