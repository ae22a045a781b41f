"""Fixtures: a tiny prepared corpus built from nibabel's real T1 (33x41x25) with the store API."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mae3d.io.atomic import write_json
from mae3d.preprocessing.store import PLAN_SCHEMA_VERSION, PreprocessedCorpus, write_case


def _zscore(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / max(float(a.std()), 1e-8)).astype(np.float32)


@pytest.fixture(scope="session")
def t1_xyz(anatomical_nii: Path) -> np.ndarray:
    """The real T1 volume, z-scored, float32 (33, 41, 25)."""
    return _zscore(np.asarray(nib.load(str(anatomical_nii)).dataobj, dtype=np.float32))


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory, t1_xyz: np.ndarray) -> Path:
    """A prepared corpus of 6 cases (3 subjects x 2 sessions) cut from the real T1, with an anon mask.

    Cases differ in shape (crops/flips of the volume) so that per-case shapes are exercised.
    """
    root = tmp_path_factory.mktemp("corpus")
    write_json(root / "plan.json", {"schema_version": PLAN_SCHEMA_VERSION, "patch_size": [16, 16, 16],
                                    "normalization": "zscore-nonzero"})
    variants = [t1_xyz, t1_xyz[2:, :, 3:], t1_xyz[::-1], t1_xyz[:, 5:, :], t1_xyz[:30, :38, :22],
                np.ascontiguousarray(np.transpose(t1_xyz, (1, 0, 2)))]
    for i, vol in enumerate(variants):
        vol = np.ascontiguousarray(vol)
        anon = (vol > np.quantile(vol, 0.8)).astype(np.uint8)[None]
        props = {"image_id": f"case{i}", "modality": "T1w",
                 "metadata": {"dataset_id": "ds1", "subject_id": f"sub{i // 2}"}}
        write_case(root / "cases", f"case{i}", vol[None], props, {"anonymization": anon},
                   patch_size=(16, 16, 16))
    assert len(PreprocessedCorpus(root).case_ids) == len(variants)
    return root


@pytest.fixture()
def corpus(corpus_root: Path) -> PreprocessedCorpus:
    return PreprocessedCorpus(corpus_root)
