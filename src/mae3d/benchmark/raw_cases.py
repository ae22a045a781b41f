"""The labelled cases of an nnU-Net raw dataset folder (``images<Tr|Ts>`` with ``labels<Tr|Ts>``).

Kept apart from :mod:`mae3d.benchmark.splits` so that the spec validator can list a dataset's cases
without importing the split logic (which itself reads the spec's types).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mae3d.io.atomic import read_json

__all__ = ["TestCase", "list_cases"]


@dataclass(frozen=True)
class TestCase:
    """A held-out case: its channel images (``CASE_XXXX``) and reference segmentation."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


def _file_ending(dataset_dir: Path) -> str:
    return str(read_json(dataset_dir / "dataset.json").get("file_ending", ".nii.gz"))


def list_cases(dataset_dir: str | Path, suffix: str) -> dict[str, TestCase]:
    """Cases of ``images<suffix>`` that have a reference in ``labels<suffix>`` (``suffix``: Tr or Ts)."""
    dataset_dir = Path(dataset_dir)
    images, labels = dataset_dir / f"images{suffix}", dataset_dir / f"labels{suffix}"
    if not images.is_dir() or not labels.is_dir():
        return {}
    ending = _file_ending(dataset_dir)
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    channels: dict[str, list[Path]] = {}
    for f in sorted(images.iterdir()):
        m = pattern.match(f.name)
        if m:
            channels.setdefault(m.group(1), []).append(f)
    return {case: TestCase(case, tuple(sorted(files)), labels / f"{case}{ending}")
            for case, files in sorted(channels.items()) if (labels / f"{case}{ending}").is_file()}
