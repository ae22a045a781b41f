"""PreprocessedCorpus: only finished cases are visible; selection by modality, shape, quality."""

from __future__ import annotations

import numpy as np
import pytest

from mae3d.io.atomic import write_json
from mae3d.preprocessing.store import (
    PLAN_SCHEMA_VERSION,
    NotAPreparedCorpusError,
    OutdatedCorpusError,
    PreprocessedCorpus,
    case_files,
    write_case,
)


@pytest.fixture
def corpus_dir(tmp_path, t1):
    x, _ = t1
    x = ((x - x.mean()) / x.std())[None]
    write_json(tmp_path / "plan.json", {"schema_version": PLAN_SCHEMA_VERSION, "patch_size": [16, 16, 16]})
    cases = tmp_path / "cases"
    for i, (mod, q) in enumerate([("T1w", 1.5), ("FLAIR", 3.0), ("T1w", None)]):
        meta = {} if q is None else {"quality": q}
        masks = {"anatomy": (x > 0).astype(np.uint8)} if i == 0 else None
        write_case(cases, f"c{i}", x[:, : 33 - 10 * i], {"modality": mod, "metadata": meta}, masks,
                   patch_size=(16, 16, 16))
    # an unfinished case: arrays written, killed before its properties
    write_case(cases, "c9", x, {"modality": "T1w", "metadata": {}})
    case_files(cases, "c9")["properties"].unlink()
    (cases / ".c9.json.abc.tmp.json").write_text("{")
    return tmp_path


def test_only_finished_cases_and_exact_arrays(corpus_dir, t1):
    c = PreprocessedCorpus(corpus_dir)
    assert c.case_ids == ["c0", "c1", "c2"] and len(c) == 3
    x, _ = t1
    x = ((x - x.mean()) / x.std())[None].astype(np.float32)
    np.testing.assert_array_equal(c.image("c0")[:, 3:20, 5:9, 0:25], x[:, 3:20, 5:9, 0:25])
    assert c.properties("c1")["shape"] == [23, 41, 25]
    assert c.mask("c0", "anatomy").dtype == np.uint8 and c.mask("c1", "anatomy") is None
    with pytest.raises(KeyError, match="c9"):
        c.image("c9")
    with pytest.raises(ValueError, match="unknown mask kind"):
        c.mask("c0", "brain")


def test_select(corpus_dir):
    c = PreprocessedCorpus(corpus_dir)
    assert c.select(modalities=["t1w"]) == ["c0", "c2"]
    assert c.select(min_shape=(20, 41, 25)) == ["c0", "c1"]
    assert c.select(max_quality=2.0) == ["c0"]  # c2 has no score: excluded when a bound is set
    assert c.select(min_quality=2.0, modalities=["FLAIR"]) == ["c1"]


def test_not_a_corpus(tmp_path):
    with pytest.raises(NotAPreparedCorpusError, match=r"plan\.json"):
        PreprocessedCorpus(tmp_path)


def _make_version1_corpus(folder, t1):
    """A folder as mae3d wrote it before the axis-order change: plan schema 1, RAS (X, Y, Z) arrays."""
    x, _ = t1
    write_json(folder / "plan.json", {"schema_version": 1, "orientation": "RAS",
                                      "array_layout": "(C=1, X, Y, Z)", "patch_size": [16, 16, 16]})
    write_case(folder / "cases", "old", x[None], {"modality": "T1w", "metadata": {}}, patch_size=(16, 16, 16))
    return folder


def test_corpus_of_an_older_plan_version_is_refused_with_the_fix(tmp_path, t1):
    """Pre-training never reads RAS-ordered arrays of a version-1 folder as if they were current."""
    folder = _make_version1_corpus(tmp_path / "old", t1)
    with pytest.raises(OutdatedCorpusError) as e:
        PreprocessedCorpus(folder)
    msg = str(e.value)
    assert str(folder / "plan.json") in msg and "schema_version 1" in msg and "RAS" in msg
    assert "re-run `mae3d prepare` into a new folder" in msg and "\n" not in msg
