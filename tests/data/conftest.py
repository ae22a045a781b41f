"""Fixtures of the embedded-data tests: the three nnU-Net datasets, built once at a CPU-sized spacing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mae3d.data import DATASETS, NnunetDataConfig, build_nnunet_dataset

# 3 mm keeps every volume below ~70^3 voxels and all CerebrA coarse classes and both tumours present
TEST_SPACING = 3.0


@pytest.fixture(scope="session")
def nnunet_cfg() -> NnunetDataConfig:
    return NnunetDataConfig(spacing=TEST_SPACING)


@pytest.fixture(scope="session")
def nnunet_raw(tmp_path_factory, nnunet_cfg) -> dict[str, Path]:
    """All embedded datasets written once into one nnU-Net raw folder: key -> dataset folder."""
    raw = tmp_path_factory.mktemp("nnUNet_raw")
    return {key: build_nnunet_dataset(key, raw, nnunet_cfg) for key in DATASETS.names()}


@pytest.fixture
def hide_package(monkeypatch):
    """Make ``importlib.util.find_spec`` report the named packages as not installed (for this test)."""
    real = importlib.util.find_spec

    def hide(*names: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name in names else real(name, *a, **k))

    return hide
