"""Shared fixtures: real embedded volumes and small helpers used across test packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def _pkg_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests share 2 cores with other processes; one intra-op thread keeps timings predictable."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def anatomical_nii() -> Path:
    """nibabel's tiny real T1 (33x41x25 at 2 mm), shipped with nibabel itself."""
    path = _pkg_dir("nibabel") / "tests" / "data" / "anatomical.nii"
    assert path.is_file(), path
    return path
