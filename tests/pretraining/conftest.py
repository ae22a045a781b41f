"""A small prepared corpus of the embedded real brain MRI, shared by the pre-training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mae3d.data.corpus import build_embedded_corpus
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.runner import prepare


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory) -> Path:
    """Every embedded real brain volume at 4 mm (cheap), prepared exactly as ``mae3d prepare`` does."""
    root = tmp_path_factory.mktemp("corpus")
    manifest = build_embedded_corpus(root / "raw")
    cfg = PrepareConfig(target_spacing=(4.0, 4.0, 4.0), patch_size=(32, 32, 32), workers=0)
    report = prepare(manifest, root / "prepared", cfg, progress=False)
    assert len(report.done) >= 5, report
    return root / "prepared"
