"""blosc2 arrays: exact round trip, partial reads equal the full array's slices, atomic writes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mae3d.io.blosc2_store import Blosc2Params, blosc2_layout, open_array, save_array


@pytest.fixture(scope="module")
def real_cxyz(anatomical_nii):
    x = np.asanyarray(nib.load(anatomical_nii).dataobj).astype(np.float32)
    return ((x - x.mean()) / x.std())[None]


@pytest.mark.parametrize("params", [Blosc2Params(), Blosc2Params(codec="zstd", clevel=3, filter="shuffle")])
def test_round_trip_and_partial_reads(real_cxyz, tmp_path, params):
    path = tmp_path / "a.b2nd"
    layout = save_array(path, real_cxyz, patch_size=(16, 16, 16), params=params)
    arr = open_array(path)
    assert arr.shape == real_cxyz.shape and arr.dtype == np.float32
    assert list(arr.blocks) == layout["blocks"] and list(arr.chunks) == layout["chunks"]
    np.testing.assert_array_equal(arr[...], real_cxyz)
    rng = np.random.default_rng(0)
    for _ in range(10):
        lo = [int(rng.integers(0, s - 8)) for s in real_cxyz.shape[1:]]
        hi = [min(s, a + int(rng.integers(1, 20))) for s, a in zip(real_cxyz.shape[1:], lo, strict=True)]
        sl = (slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        np.testing.assert_array_equal(arr[sl], real_cxyz[sl])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.b2nd"]  # no temporary file left


def test_layout_follows_the_patch_size():
    blocks, chunks = blosc2_layout((1, 193, 229, 193), (160, 160, 160), 4)
    assert blocks[0] == chunks[0] == 1
    assert np.prod(blocks) * 4 <= 128 * 1024 and np.prod(chunks) * 4 <= 6 * 1024**2
    assert all(c <= 1.5 * 160 for c in chunks[1:])


def test_no_silent_overwrite_and_clear_errors(real_cxyz, tmp_path):
    path = tmp_path / "a.b2nd"
    save_array(path, real_cxyz)
    with pytest.raises(FileExistsError):
        save_array(path, real_cxyz, overwrite=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        open_array(tmp_path / "none.b2nd")
    bad = tmp_path / "bad.b2nd"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"bad\.b2nd"):
        open_array(bad)
    with pytest.raises(ValueError, match="codec"):
        Blosc2Params(codec="nope")
