"""CorpusFilter on manifest records (preprocessing time) and on stored properties (training time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mae3d.config import ConfigError, from_dict
from mae3d.corpus.filters import CorpusFilter, spatial_shape
from mae3d.corpus.from_folder import build_from_folder
from mae3d.corpus.nnssl_json import build_from_nnssl_json
from mae3d.io.volumes import read_header


def test_modalities_case_insensitive_with_reasons(bids_tree: Path):
    recs = list(build_from_folder(bids_tree).images())
    kept, dropped = CorpusFilter(modalities=["t1w", "FLAIR"]).apply(recs)
    assert sorted(r.modality for r in kept) == ["FLAIR", "FLAIR", "T1w", "T1w", "T1w"]
    assert [(r.modality, why) for r, why in dropped] == [("T2w", "modality 'T2w' not in ['t1w', 'FLAIR']")]
    assert [r.image_id for r in kept] == [r.image_id for r in recs if r.modality != "T2w"]  # order kept


def test_min_voxels_with_shapes_from_headers(bids_tree: Path):
    recs = list(build_from_folder(bids_tree).images())
    f = CorpusFilter(min_voxels=45_000)  # brain1 crops: 64*64*12 = 49152; T1: 33825; brain2 crop: 40960
    kept, dropped = f.apply(recs, shape_of=lambda r: read_header(r.path).shape)
    assert sorted(r.image_id for r in kept) == ["dsA__sub-01__ses-2__sub-01_ses-2_T1w",
                                                "dsB__sub-01__ses-DEFAULT__sub-01_FLAIR"]
    assert len(dropped) == 4 and all("below min_voxels 45000" in why for _, why in dropped)
    # without a shape the size criteria cannot judge: everything passes (checked again later)
    assert f.apply(recs)[0] == recs


def test_quality_bounds_on_nnssl_scores(nnssl_json, bids_tree: Path):
    recs = list(build_from_nnssl_json(nnssl_json[0], env={"nnssl_raw": str(bids_tree)}).images())
    kept, dropped = CorpusFilter(max_quality=2.0).apply(recs)  # OpenMind IQS: lower is better
    assert sorted(r.metadata["quality"] for r in kept) == [0.5, 1.5, 2.0]
    assert [why for _, why in dropped] == ["quality 3.0 above max_quality 2.0"]
    kept, dropped = CorpusFilter(min_quality=1.0, max_quality=2.0).apply(recs)
    assert sorted(r.metadata["quality"] for r in kept) == [1.5, 2.0]
    del recs[0].metadata["quality"]  # records are frozen, their metadata dicts are not
    kept, dropped = CorpusFilter(max_quality=5.0).apply(recs)
    assert [why for _, why in dropped] == ["no numeric 'quality' in metadata"]
    assert len(CorpusFilter(max_quality=5.0, keep_missing_quality=True).apply(recs)[0]) == 4


def test_matches_on_stored_properties():
    f = CorpusFilter(modalities=["T1w"], min_shape=(32, 32, 32), min_quality=1.0, quality_field="iqs")
    props = {"modality": "T1w", "shape": [1, 64, 48, 40], "metadata": {"iqs": 2}}
    assert f.matches_record(props) is None
    assert f.matches("T1w", (64, 48, 40), {"iqs": 2}) is None
    assert f.matches("T1w", (64, 31, 40), {"iqs": 2}) == "shape (64, 31, 40) below min_shape (32, 32, 32)"
    assert f.matches("T1w", (64, 48, 40), {"iqs": 0.5}) == "iqs 0.5 below min_quality 1.0"
    assert f.matches("T1w", (64, 48, 40), {"iqs": True}) == "no numeric 'iqs' in metadata"
    assert f.matches("T2w", None, {}) == "modality 'T2w' not in ['T1w']"
    assert f.matches("T1w", (64, 48), {"iqs": 2}) is not None  # fewer axes than min_shape
    assert CorpusFilter().matches("anything", (1, 1, 1), None) is None
    assert not CorpusFilter().active and f.active


def test_spatial_shape_drops_singleton_channel_axes():
    assert spatial_shape((1, 64, 48, 40)) == (64, 48, 40)
    assert spatial_shape((116, 150, 155, 1)) == (116, 150, 155)
    assert spatial_shape((64, 48, 40, 3)) == (64, 48, 40, 3)
    assert spatial_shape((1, 1, 5)) == (1, 1, 5)


def test_validation_and_config_loading():
    with pytest.raises(ValueError, match="min_quality"):
        CorpusFilter(min_quality=3, max_quality=2)
    with pytest.raises(ValueError, match="empty list"):
        CorpusFilter(modalities=[])
    f = from_dict(CorpusFilter, {"modalities": ["T1w"], "min_shape": [32, 32, 32], "max_quality": 3})
    assert f.min_shape == (32, 32, 32) and f.max_quality == 3.0
    with pytest.raises(ConfigError):
        from_dict(CorpusFilter, {"min_quality": 5, "max_quality": 1})
