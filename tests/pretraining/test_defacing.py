"""Defacing masks end to end: nnssl pretrain_data.json -> manifest -> prepare -> loader -> loss.

A real T1 volume with a synthetic defacing mask (its brightest 10% of voxels, so the stored mask
can be checked against the stored image without re-implementing the preprocessing) and an anatomy
mask (its brightest 70%): each stored mask must stay the mask of its own kind (nnssl swaps them when
both exist), arrive in the batches aligned with the image, and take the defaced voxels out of the
input and the loss. Polarity: non-zero = defaced.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mae3d.corpus.manifest import save_manifest
from mae3d.corpus.nnssl_json import build_from_nnssl_json
from mae3d.models import build_network
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.runner import prepare
from mae3d.preprocessing.store import PreprocessedCorpus
from mae3d.pretraining.data import AugmentConfig, LoaderConfig, build_train_loader
from mae3d.pretraining.masking import sample_block_mask, upsample_mask
from mae3d.pretraining.methods import build_method

from .test_trainer import tiny_config


def _image(name: str, path: Path, anon: Path | None, anat: Path | None) -> dict:
    return {"name": name, "image_path": str(path), "modality": "T1w", "image_info": {},
            "associated_masks": {"anonymization_mask": None if anon is None else str(anon),
                                 "anatomy_mask": None if anat is None else str(anat)}}


@pytest.fixture(scope="module")
def defaced_corpus(tmp_path_factory: pytest.TempPathFactory, anatomical_nii: Path) -> Path:
    """Prepared corpus of two real T1 cases: ``..._defaced`` with both masks, ``..._plain`` with none."""
    raw = tmp_path_factory.mktemp("defaced_raw")
    img = nib.load(str(anatomical_nii))
    data = np.asarray(img.dataobj, dtype=np.float32)
    for name, q in (("deface", 0.9), ("brain", 0.3)):
        mask = (data > np.quantile(data, q)).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, img.affine, img.header), str(raw / f"{name}.nii.gz"))
    # a second, different scan without masks: the volume mirrored
    mirrored = np.ascontiguousarray(data[::-1])
    nib.save(nib.Nifti1Image(mirrored, img.affine, img.header), str(raw / "plain.nii.gz"))
    images = [_image("t1_defaced.nii", anatomical_nii, raw / "deface.nii.gz", raw / "brain.nii.gz"),
              _image("t1_plain.nii.gz", raw / "plain.nii.gz", None, None)]
    sessions = {f"ses-{i}": {"session_id": f"ses-{i}", "images": [im]} for i, im in enumerate(images)}
    js = {"collection_index": 1, "collection_name": "Defaced",
          "datasets": {"d": {"dataset_index": "d", "subjects": {
              "s": {"subject_id": "s", "sessions": sessions}}}}}
    (raw / "pretrain_data.json").write_text(json.dumps(js))
    manifest = build_from_nnssl_json(raw / "pretrain_data.json")
    save_manifest(manifest, raw / "manifest.json")
    out = raw / "prepared"
    report = prepare(raw / "manifest.json", out, PrepareConfig(spacing_mode="none", patch_size=(32, 32, 32),
                                                               workers=0), progress=False)
    assert len(report.done) == 2, report
    return out


def _ids(corpus: PreprocessedCorpus) -> tuple[str, str]:
    (defaced,) = [c for c in corpus.case_ids if "defaced" in c]
    (plain,) = [c for c in corpus.case_ids if "plain" in c]
    return defaced, plain


def test_each_mask_kind_is_stored_as_itself_and_aligned(defaced_corpus):
    corpus = PreprocessedCorpus(defaced_corpus)
    defaced, plain = _ids(corpus)
    x = np.asarray(corpus.image(defaced)[:])
    anon = np.asarray(corpus.mask(defaced, "anonymization")[:]).astype(bool)
    anat = np.asarray(corpus.mask(defaced, "anatomy")[:]).astype(bool)
    assert corpus.mask(plain, "anonymization") is None
    # not swapped: the defacing mask is the small one (10% of the source), inside the anatomy mask (70%)
    assert 0 < anon.sum() < 0.25 * anat.sum() and not (anon & ~anat).any()
    # aligned with the image: exactly its brightest voxels (z-scoring is monotonic)
    assert x[anon].min() > x[~anon].max()


def test_loader_batches_carry_the_defacing_mask_aligned_with_the_patch(defaced_corpus):
    corpus = PreprocessedCorpus(defaced_corpus)
    defaced, plain = _ids(corpus)
    cfg = LoaderConfig(patch_size=(32, 32, 16), batch_size=4, workers=0, masks=("anonymization",),
                       augment=AugmentConfig(p_rotation=0.0, p_scale=0.0))  # crops + mirroring
    loader = build_train_loader(defaced_corpus, [defaced, plain], cfg, seed=0)
    batches = list(itertools.islice(iter(loader), 3))
    seen = set()
    for batch in batches:
        for x, anon, case in zip(batch["x"], batch["anon"], batch["case_ids"], strict=True):
            seen.add(case)
            m = anon.bool()
            if case == plain:
                assert not m.any()  # a case without a mask: nothing defaced
            elif m.any():
                assert x[m].min() > x[~m].max()  # the mask moved (cropped, mirrored) with the image
    assert seen == {defaced, plain}


def test_defaced_voxels_leave_the_loss_through_the_trainer(defaced_corpus, tmp_path):
    from mae3d.pretraining.trainer import Pretrainer

    sets = {"loader.patch_size": "[32, 32, 32]", "loader.val_fraction": "0.0"}
    trainer = Pretrainer(tiny_config(defaced_corpus, **sets), tmp_path / "a")
    assert trainer.exclude_defaced and "anonymization" in trainer.loader_cfg.masks
    off = Pretrainer(tiny_config(defaced_corpus, **sets, **{"data.exclude_defaced": "false"}), tmp_path / "b")
    assert not off.exclude_defaced and off.loader_cfg.masks == ()
    it = trainer._train_batches()
    try:
        batch = next(b for b in it if b["anon"].any())
    finally:
        it.close()
    defaced = trainer._defaced(batch)
    assert off._defaced(batch) is None
    x_bcdhw = batch["x"]
    mask_b1ghw = sample_block_mask(x_bcdhw.shape[0], 32, 8, 0.75, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    mae = build_method("mae", build_network("resenc-xs"))
    out = mae(x_bcdhw, mask_b1ghw, defaced)
    (grad,) = torch.autograd.grad(out.loss, out.reconstruction_bcdhw)
    bad = defaced.bool()
    assert bad.any() and torch.all(grad[bad] == 0)
    use = ~upsample_mask(mask_b1ghw, x_bcdhw.shape[2:]).bool() & ~bad
    expect = (out.reconstruction_bcdhw.detach() - x_bcdhw)[use].square().mean()
    torch.testing.assert_close(out.loss, expect, rtol=1e-5, atol=1e-7)
