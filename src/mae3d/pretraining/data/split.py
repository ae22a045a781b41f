"""Train/validation split of a case list, by subject where the case properties name subjects.

Splitting by subject keeps every scan of a person on one side, so validation patches never come
from a subject the model trained on (longitudinal/multi-modal corpora have many scans per subject).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["split_cases", "split_corpus", "subject_of"]


def subject_of(properties: Mapping[str, Any]) -> str | None:
    """Subject identifier of a case from its properties, or None if they carry none.

    Looks for ``subject_key`` (dataset-qualified, as ``mae3d.corpus`` builds it), then
    ``dataset_id`` + ``subject_id``, then ``subject_id``, at top level or under ``metadata``.
    """
    for src in (properties, properties.get("metadata") or {}):
        if not isinstance(src, Mapping):
            continue
        if src.get("subject_key"):
            return str(src["subject_key"])
        if src.get("subject_id"):
            ds = src.get("dataset_id")
            return f"{ds}__{src['subject_id']}" if ds else str(src["subject_id"])
    return None


def split_cases(
    case_ids: Sequence[str], val_fraction: float = 0.05, seed: int = 0,
    subjects: Mapping[str, str | None] | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``case_ids`` into (train, val), deterministically from ``seed``.

    Groups are subjects when ``subjects`` maps every case to a subject id and there are >= 2
    subjects, otherwise single cases. ``round(val_fraction * groups)`` groups go to validation,
    at least 1 whenever there are >= 2 groups and ``val_fraction > 0``, and never all of them.
    Both lists keep the input order.
    """
    if not case_ids:
        raise ValueError("split_cases: no cases to split (the selection is empty)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split_cases: val_fraction must be in [0, 1), got {val_fraction}")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("split_cases: case ids are not unique")
    group = {c: c for c in case_ids}
    if subjects is not None and all(subjects.get(c) for c in case_ids):
        by_subject = {c: str(subjects[c]) for c in case_ids}
        if len(set(by_subject.values())) >= 2:
            group = by_subject
    groups = sorted(set(group.values()))
    n_val = 0
    if val_fraction > 0 and len(groups) >= 2:
        n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    order = np.random.default_rng(seed).permutation(len(groups))
    val_groups = {groups[i] for i in order[:n_val]}
    train = [c for c in case_ids if group[c] not in val_groups]
    val = [c for c in case_ids if group[c] in val_groups]
    return train, val


def split_corpus(corpus: Any, case_ids: Sequence[str] | None = None, val_fraction: float = 0.05,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """``split_cases`` over a ``PreprocessedCorpus`` (all its cases by default), by subject if known."""
    ids = list(corpus.case_ids if case_ids is None else case_ids)
    subjects = {c: subject_of(corpus.properties(c)) for c in ids}
    return split_cases(ids, val_fraction, seed, subjects)  # type: ignore[arg-type]
