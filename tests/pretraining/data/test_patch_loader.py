"""Training/validation loaders: reproducible seeded streams, rank streams, workers, device mode, errors."""

from __future__ import annotations

import itertools
import pickle
import shutil

import numpy as np
import pytest
import torch

from mae3d.pretraining.data import (
    EmptySelectionError,
    LoaderConfig,
    iterate_batches,
)
from mae3d.pretraining.data import build_train_loader as _build_train
from mae3d.pretraining.data import build_val_loader as _build_val
from mae3d.pretraining.data.config import AugmentConfig

P = (12, 16, 20)
IDS = [f"case{i}" for i in range(6)]


def _cfg(**kw) -> LoaderConfig:
    base = {"patch_size": P, "batch_size": 3, "workers": 0, "masks": ("anonymization",),
            "augment": AugmentConfig(p_rotation=0.5, p_scale=0.5)}
    base.update(kw)
    return LoaderConfig(**base)


def build_train_loader(*args, seed: int = 7, **kw):
    return _build_train(*args, seed=seed, **kw)


def build_val_loader(*args, seed: int = 7, **kw):
    return _build_val(*args, seed=seed, **kw)


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def _same(a, b) -> bool:
    return a["case_ids"] == b["case_ids"] and torch.equal(a["x"], b["x"])


def test_batches_have_the_patch_shape_and_masks(corpus_root):
    (batch,) = _take(build_train_loader(corpus_root, IDS, _cfg()), 1)
    assert batch["x"].shape == (3, 1, *P) and batch["x"].dtype == torch.float32
    assert batch["anon"].shape == (3, 1, *P) and batch["anon"].dtype == torch.uint8
    assert len(batch["case_ids"]) == 3 and set(batch["case_ids"]) <= set(IDS)
    assert torch.isfinite(batch["x"]).all() and batch["x"].abs().sum() > 0


def test_same_seed_same_batches_other_rank_or_seed_other_stream(corpus_root):
    a = _take(build_train_loader(corpus_root, IDS, _cfg()), 3)
    b = _take(build_train_loader(corpus_root, IDS, _cfg()), 3)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    r1 = _take(build_train_loader(corpus_root, IDS, _cfg(), rank=1, world_size=2), 3)
    s8 = _take(build_train_loader(corpus_root, IDS, _cfg(), seed=8), 3)
    for other in (r1, s8):
        assert not any(_same(x, y) for x, y in zip(a, other, strict=True))
    assert not any(_same(x, y) for x, y in itertools.combinations(a, 2))  # every batch is new


def test_stream_can_start_at_any_batch(corpus_root):
    """A resumed run (start_batch = epoch x iterations) continues the uninterrupted run's stream."""
    whole = _take(build_train_loader(corpus_root, IDS, _cfg()), 5)
    tail = _take(build_train_loader(corpus_root, IDS, _cfg(), start_batch=3), 2)
    assert all(_same(x, y) for x, y in zip(whole[3:], tail, strict=True))
    with pytest.raises(ValueError, match="start_batch must be >= 0"):
        build_train_loader(corpus_root, IDS, _cfg(), start_batch=-1)


def test_worker_processes_do_not_change_the_stream(corpus_root):
    """Batch n is the same with 0, 1 or 2 worker processes, also when the stream starts mid-way."""
    single = _take(build_train_loader(corpus_root, IDS, _cfg()), 7)
    two = _take(build_train_loader(corpus_root, IDS, _cfg(workers=2, prefetch=2)), 7)
    one = _take(build_train_loader(corpus_root, IDS, _cfg(workers=1, prefetch=1), start_batch=2), 5)
    assert all(_same(x, y) for x, y in zip(single, two, strict=True))
    assert all(_same(x, y) for x, y in zip(single[2:], one, strict=True))
    assert all(x["x"].shape == (3, 1, *P) for x in two)


def test_device_augment_gives_the_cpu_path_result(corpus_root):
    cpu = _take(build_train_loader(corpus_root, IDS, _cfg()), 3)
    cfg = _cfg(device_augment=True)
    dev = list(itertools.islice(iterate_batches(build_train_loader(corpus_root, IDS, cfg), cfg, "cpu"), 3))
    for a, b in zip(cpu, dev, strict=True):
        assert a["case_ids"] == b["case_ids"]
        torch.testing.assert_close(a["x"], b["x"], rtol=0, atol=2e-5)
        assert (a["anon"] != b["anon"]).float().mean() < 1e-3


def test_validation_loader_is_fixed_and_unaugmented(corpus, corpus_root):
    cfg = _cfg(val_patches_per_case=2, batch_size=2)
    val_ids = ["case1", "case4"]
    a = list(build_val_loader(corpus_root, val_ids, cfg))
    b = list(build_val_loader(corpus_root, val_ids, _cfg(val_patches_per_case=2, batch_size=2, workers=2)))
    assert sum(len(x["case_ids"]) for x in a) == 4
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    # patch 0 of a case is its centre crop
    img = corpus.image("case1")
    lo = (np.asarray(img.shape[1:]) - np.asarray(P)) // 2
    crop = img[:, lo[0]:lo[0] + P[0], lo[1]:lo[1] + P[1], lo[2]:lo[2] + P[2]]
    np.testing.assert_array_equal(a[0]["x"][0].numpy(), crop)
    # ranks split the validation cases
    r0 = list(build_val_loader(corpus_root, val_ids, cfg, rank=0, world_size=2))
    assert {c for x in r0 for c in x["case_ids"]} == {"case1"}


def test_empty_selection_is_a_clear_error(corpus_root):
    with pytest.raises(EmptySelectionError, match="no cases selected"):
        build_train_loader(corpus_root, [], _cfg())
    with pytest.raises(EmptySelectionError, match="no cases selected"):
        build_val_loader(corpus_root, [], _cfg())
    with pytest.raises(ValueError, match=r"not finished cases.*'nope'"):
        build_train_loader(corpus_root, ["case0", "nope"], _cfg())
    with pytest.raises(FileNotFoundError, match="not a prepared corpus"):
        build_train_loader(corpus_root / "cases", IDS, _cfg())


def test_unreadable_case_is_skipped_with_a_warning(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    (root / "cases" / "case2.b2nd").write_bytes(b"not a blosc2 file")
    with pytest.warns(UserWarning, match="case2"):
        batches = _take(build_train_loader(root, IDS, _cfg()), 6)
    seen = {c for b in batches for c in b["case_ids"]}
    assert "case2" not in seen and len(seen) >= 3


def test_dataset_pickles_without_open_arrays(corpus_root):
    loader = build_train_loader(corpus_root, IDS, _cfg())
    _take(loader, 1)  # opens the corpus in this process
    stream = pickle.loads(pickle.dumps(loader.dataset))
    assert stream._corpus._corpus is None  # a worker opens its own blosc2 files
    fresh = _take(build_train_loader(corpus_root, IDS, _cfg()), 1)[0]
    assert _same(fresh, next(iter(stream)))


def test_validation_budget_gives_that_many_fixed_batches(corpus_root):
    """num_batches: exactly that many batches from the held-out cases, identical on every call."""
    cfg = _cfg(batch_size=2)
    val_ids = ["case1", "case4", "case5"]
    a = list(build_val_loader(corpus_root, val_ids, cfg, num_batches=5))
    assert len(a) == 5 and all(len(x["case_ids"]) == 2 for x in a)
    assert {c for x in a for c in x["case_ids"]} == set(val_ids)  # spread over every held-out case
    b = list(build_val_loader(corpus_root, val_ids, _cfg(batch_size=2, workers=2), num_batches=5))
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))  # same patches every epoch
    patches = [p.numpy().tobytes() for x in a for p in x["x"]]
    assert len(set(patches)) == 10  # 10 different crops (3-4 per case), not one crop repeated
    one = list(build_val_loader(corpus_root, val_ids, cfg, num_batches=1))
    assert len(one) == 1
    # ranks draw disjoint shares of the same budget, each rank num_batches batches
    r = [list(build_val_loader(corpus_root, val_ids, cfg, num_batches=2, rank=k, world_size=2))
         for k in (0, 1)]
    assert [len(x) for x in r] == [2, 2]
    assert not {p.numpy().tobytes() for x in r[0] for p in x["x"]} & {p.numpy().tobytes() for x in r[1]
                                                                        for p in x["x"]}
    other_seed = list(build_val_loader(corpus_root, val_ids, cfg, num_batches=5, seed=8))
    assert not all(_same(x, y) for x, y in zip(a, other_seed, strict=True))
