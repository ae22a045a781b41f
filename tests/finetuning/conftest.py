"""Fixtures for fine-tuning tests: a tiny ResEnc checkpoint and small real labelled datasets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mae3d.finetuning import FinetuneConfig, ScheduleConfig

PATCH = (32, 32, 32)


def make_checkpoint(path: Path, *, in_channels: int = 1, spacing: float = 4.0,
                    patch: tuple[int, int, int] = PATCH, preset: str = "resenc-xs") -> Path:
    """A mae3d checkpoint of the (untrained, PyTorch-initialised) ``preset`` network."""
    from mae3d.models import canonical_architecture, describe, network_from_description
    from mae3d.transfer import make_checkpoint as mk
    from mae3d.transfer import save_checkpoint

    arch = canonical_architecture(describe(preset))
    net = network_from_description(arch, in_channels, 1)
    ckpt = mk(net.state_dict(), arch, {"method": "mae", "spacing": [spacing] * 3, "patch_size": list(patch),
                                       "normalization": "zscore", "orientation": "as-stored",
                                       "in_channels": in_channels, "num_output_channels": 1})
    return save_checkpoint(path, ckpt)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """resenc-xs (total stride 16) pre-trained at 4 mm with a 32^3 patch, 1 input channel."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_mae.pth")


def make_openmind_folder(folder: Path, *, spacing: float = 4.0, patch: tuple[int, int, int] = PATCH) -> Path:
    """A model folder as nnssl writes / Hugging Face hosts it (no mae3d metadata in it).

    ``checkpoint_final.pth`` = ``{"network_weights", "nnssl_adaptation_plan", "trainer_name", ...}`` and
    the same plan as ``adaptation_plan.json`` (nnssl.md §6.1-6.2). The network is a seeded, perturbed
    resenc-xs, so its weights differ from any fresh initialisation.
    """
    import torch

    from mae3d.models import canonical_architecture, describe, network_from_description

    arch = canonical_architecture(describe("resenc-xs"))
    torch.manual_seed(7)
    net = network_from_description(arch, 1, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plan = {
        "architecture_plans": {"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": arch["arch_kwargs"],
                               "arch_kwargs_requiring_import": arch["_kw_requires_import"]},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                          "configurations": {"onemmiso": {"spacing": [spacing] * 3, "patch_size": list(patch),
                                                          "normalization_schemes": ["ZScoreNormalization"]}}},
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": list(patch),
        "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
    }
    folder.mkdir(parents=True)
    payload = {"network_weights": net.state_dict(), "nnssl_adaptation_plan": plan,
               "trainer_name": "BaseMAETrainer_BS8", "citations": ["nnssl"]}
    torch.save(payload, folder / "checkpoint_final.pth")
    (folder / "adaptation_plan.json").write_text(json.dumps(plan))
    return folder


@pytest.fixture(scope="session")
def openmind_folder(tmp_path_factory) -> Path:
    """An nnssl/OpenMind-format model folder of a resenc-xs pre-trained at 4 mm with a 32^3 patch."""
    return make_openmind_folder(tmp_path_factory.mktemp("hf") / "ResEncXS-OpenMind-MAE")


@pytest.fixture(scope="session")
def brain_dataset(tmp_path_factory) -> Path:
    """Dataset901_BrainExtraction at 4 mm: 2 real training heads with brain masks, 1 held-out head."""
    from mae3d.data import NnunetDataConfig, build_nnunet_dataset

    raw = tmp_path_factory.mktemp("raw")
    return build_nnunet_dataset("brainextraction", raw, NnunetDataConfig(spacing=4.0))


def fast_config(**kw) -> FinetuneConfig:
    """Seconds-long CPU runs: 32^3 patch, batch 2, in-process augmentation / preprocessing / export."""
    schedule = kw.pop("schedule", ScheduleConfig(name="warmup", warmup_epochs=1))
    base = dict(fold="all", device="cpu", epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1,
                patch_size=PATCH, da_workers=0, export_workers=1, preprocess_workers=1,
                final_validation=False, schedule=schedule)
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="session")
def anatomical_t1(anatomical_nii) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's real T1 (33x41x25, 2 mm) as float32 and its affine."""
    img = nib.load(anatomical_nii)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


@pytest.fixture
def make_small_dataset(tmp_path, anatomical_t1) -> Callable[..., Path]:
    """Write a tiny nnU-Net raw dataset from the real T1 (label: thresholded head), returns its folder.

    Cases are the T1 and its left-right flip; ``channels`` copies the image per channel (scaled).
    """
    data, affine = anatomical_t1
    mask = (data > np.percentile(data, 60)).astype(np.uint8)

    def build(name: str = "Dataset950_Small", channels: int = 1, cases: int = 2,
              labels: dict[str, int] | None = None) -> Path:
        root = tmp_path / "raw" / name
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        for i in range(cases):
            img = data[::-1] if i % 2 else data
            seg = mask[::-1] if i % 2 else mask
            for c in range(channels):
                nib.save(nib.Nifti1Image(img * (1 + c), affine),
                         root / "imagesTr" / f"case{i}_{c:04d}.nii.gz")
            nib.save(nib.Nifti1Image(np.ascontiguousarray(seg), affine),
                     root / "labelsTr" / f"case{i}.nii.gz")
        ds = {"channel_names": {str(c): f"T1_{c}" for c in range(channels)},
              "labels": labels or {"background": 0, "head": 1}, "numTraining": cases,
              "file_ending": ".nii.gz"}
        (root / "dataset.json").write_text(json.dumps(ds))
        return root

    return build


@pytest.fixture(scope="session")
def prepared_fixed(tmp_path_factory, brain_dataset, tiny_checkpoint):
    """Fixed ("like pre-trained") plans + preprocessed data of the brain dataset: (out_dir, PreparedPlans)."""
    from mae3d.finetuning import prepare_plans
    from mae3d.finetuning.planning import PREPROCESSED_DIRNAME
    from mae3d.finetuning.pretrained import read_checkpoint

    out = tmp_path_factory.mktemp("prepared")
    cfg = fast_config(patch_size=None)  # the checkpoint's own 32^3 patch
    pre = read_checkpoint(tiny_checkpoint)
    return out, prepare_plans(brain_dataset, out / PREPROCESSED_DIRNAME, cfg, pre)


@pytest.fixture(scope="session")
def fast_cfg() -> Callable[..., FinetuneConfig]:
    """:func:`fast_config` for tests (test modules cannot import conftest)."""
    return fast_config
