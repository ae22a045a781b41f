"""Device-side augmentation (run on CPU tensors): equals the CPU path, batched over mixed patches."""

from __future__ import annotations

import numpy as np
import torch

from mae3d.pretraining.data.gpu import GPUAugment, augment_batch, collate_regions
from mae3d.pretraining.data.params import PatchParams
from mae3d.pretraining.data.sampling import sample_patch, sample_region

P = (12, 16, 20)
C = (16.5, 20.5, 12.5)  # centres as drawn for even sizes: no nearest-neighbour ties on unrotated axes
MIXED = [
    PatchParams(C),                                                           # plain crop
    PatchParams((9.5, 17.5, 12.5), mirror=(True, False, True)),               # crop + mirror
    PatchParams(C, angles_rad=(0.4, -0.3, 0.5), scale=1.3, mirror=(True, False, False)),
    PatchParams((3.0, 35.0, 20.0), scale=0.75),                               # near a corner
    PatchParams(C, angles_rad=(0.0, 0.0, -0.5)),
]


def _batch(corpus, params_list, case="case0"):
    img, anon = corpus.image(case), corpus.mask(case, "anonymization")
    samples = []
    for p in params_list:
        s = sample_region(img, p, P, {"anon": anon})
        s["case_id"] = case
        samples.append(s)
    return collate_regions(samples, ("anon",)), img, anon


def test_device_path_on_cpu_equals_cpu_path(corpus):
    batch, img, anon = _batch(corpus, MIXED)
    # regions of different sizes were padded to one shape
    assert batch["region"].shape[:2] == (len(MIXED), 1)
    out = GPUAugment(P, ("anon",))(batch, "cpu")
    assert out["x"].shape == (len(MIXED), 1, *P) and out["anon"].dtype == torch.uint8
    assert out["case_ids"] == ["case0"] * len(MIXED)
    for i, p in enumerate(MIXED):
        ref = sample_patch(img, p, P, {"anon": anon})
        if not p.transformed:  # crop/mirror: bit-identical
            torch.testing.assert_close(out["x"][i], ref["x"], rtol=0, atol=0)
            torch.testing.assert_close(out["anon"][i], ref["anon"], rtol=0, atol=0)
        else:
            torch.testing.assert_close(out["x"][i], ref["x"], rtol=0, atol=2e-5)
            assert (out["anon"][i] != ref["anon"]).float().mean() < 1e-3


def test_device_rotation_moves_content_like_rot90(corpus):
    size = (12, 12, 10)
    lo = np.array([5, 9, 4])
    centre = tuple(float(c) for c in lo + (np.asarray(size) - 1) / 2)
    img = corpus.image("case0")
    samples = [sample_region(img, PatchParams(centre, angles_rad=(0.0, 0.0, np.pi / 2)), size)]
    samples[0]["case_id"] = "case0"
    batch = collate_regions(samples)
    x = augment_batch(batch["region"], batch["aug"], size, device="cpu")[0, 0].numpy()
    crop = img[0, lo[0]:lo[0] + 12, lo[1]:lo[1] + 12, lo[2]:lo[2] + 10]
    np.testing.assert_allclose(x, np.rot90(crop, -1, axes=(0, 1)), atol=1e-5)


def test_regions_are_clipped_to_the_image(corpus):
    img = corpus.image("case0")
    p = PatchParams((2.0, 2.0, 2.0), angles_rad=(0.5, 0.5, 0.5), scale=1.4)
    s = sample_region(img, p, P)
    assert np.all(s["origin"] >= 0)
    assert np.all(s["origin"] + np.asarray(s["region"].shape[1:]) <= np.asarray(img.shape[1:]))
