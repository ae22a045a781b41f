"""PreprocessedCorpus: only finished cases are visible; selection by modality, shape, quality."""

from __future__ import annotations

import numpy as np
import pytest

from mae3d.io.atomic import write_json
from mae3d.preprocessing.store import NotAPreparedCorpusError, PreprocessedCorpus, case_files, write_case


@pytest.fixture
def corpus_dir(tmp_path, t1):
    x, _ = t1
    x = ((x - x.mean()) / x.std())[None]
    write_json(tmp_path / "plan.json", {"schema_version": 1, "patch_size": [16, 16, 16]})
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
