"""Predict segmentations with a fine-tuned model folder, using nnU-Net's sliding-window predictor.

nnU-Net's ``nnUNetPredictor.initialize_from_trained_model_folder`` looks the trainer class up by
name (which imports nnU-Net's Primus trainers -> timm -> torchvision and crashes here) and loads
checkpoints with ``weights_only=False``. This module instead reads ``plans.json`` / ``dataset.json``
of the model folder, builds the network through mae3d's allowlist
(:func:`mae3d.finetuning.network.build_from_plans`, the same function the trainer used), loads the
fold checkpoints with ``weights_only=True`` (:func:`mae3d.transfer.load_training_checkpoint`) and hands all of
it to ``nnUNetPredictor.manual_initialization``. Several folds are ensembled (logits averaged), as
``nnUNetv2_predict`` does. Preprocessing, Gaussian-weighted sliding window, optional mirroring and
export back to the input geometry are nnU-Net's.

Input: ``CASE_0000<ending>``, ``CASE_0001<ending>``, ... per case (nnU-Net's imagesTs layout).
Output: ``CASE<ending>`` per case; predictions are written to a temporary folder first and moved
into ``output_dir`` file by file, and existing predictions are only replaced with ``overwrite``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mae3d.io.atomic import read_json, write_json

__all__ = ["PredictionInputError", "find_folds", "predict"]


class PredictionInputError(ValueError):
    """The model folder or the input images cannot be used; the message names the file."""


def find_folds(model_dir: str | Path, checkpoint_name: str = "checkpoint_final.pth") -> list[int | str]:
    """Folds of ``model_dir`` that have ``checkpoint_name``: numbered folds, else ``"all"``."""
    model_dir = Path(model_dir)
    numbered = sorted(int(p.name[5:]) for p in model_dir.glob("fold_*")
                      if p.name[5:].isdigit() and (p / checkpoint_name).is_file())
    if numbered:
        return list(numbered)
    if (model_dir / "fold_all" / checkpoint_name).is_file():
        return ["all"]
    raise PredictionInputError(f"{model_dir}: no fold_*/{checkpoint_name} (not a trained model folder?)")


def _input_cases(input_dir: Path, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    if not input_dir.is_dir():
        raise PredictionInputError(f"{input_dir}: input folder not found")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    cases: dict[str, dict[int, str]] = {}
    for f in sorted(input_dir.iterdir()):
        if not f.name.endswith(file_ending):
            continue
        m = pattern.match(f.name)
        if m is None:
            raise PredictionInputError(f"{f}: input images must be named CASE_XXXX{file_ending} "
                                       "(XXXX = 4-digit channel index)")
        cases.setdefault(m.group(1), {})[int(m.group(2))] = str(f)
    if not cases:
        raise PredictionInputError(f"{input_dir}: no images ending in {file_ending!r}")
    out: dict[str, list[str]] = {}
    for case, channels in cases.items():
        if sorted(channels) != list(range(num_channels)):
            raise PredictionInputError(f"{input_dir}: case {case!r} has channel files {sorted(channels)}, "
                                       f"the model expects channels 0..{num_channels - 1}")
        out[case] = [channels[c] for c in range(num_channels)]
    return out


def _load_folds(model_dir: Path, folds: Sequence[int | str], checkpoint_name: str
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from mae3d.transfer import load_training_checkpoint

    weights, first = [], None
    for fold in folds:
        ckpt = load_training_checkpoint(model_dir / f"fold_{fold}" / checkpoint_name)
        weights.append(ckpt["network_weights"])
        first = first or ckpt
    assert first is not None
    return weights, first


def predict(model_dir: str | Path, input_dir: str | Path, output_dir: str | Path, *, mirroring: bool = False,
            device: str = "auto", checkpoint_name: str = "checkpoint_final.pth", num_processes: int = 1,
            folds: Sequence[int | str] | None = None, tile_step_size: float = 0.5,
            overwrite: bool = False) -> Path:
    """Segment every case in ``input_dir`` with the model folder ``model_dir``.

    Args:
        model_dir: ``.../<Trainer>__<plans>__<config>`` with ``plans.json``, ``dataset.json`` and
            ``fold_<k>/<checkpoint_name>`` (what :func:`mae3d.finetuning.finetune` returns).
        input_dir: images named ``CASE_0000<ending>`` (one file per channel).
        output_dir: where ``CASE<ending>`` segmentations go (created).
        mirroring: test-time mirroring over the axes the model was trained with (8x slower in 3-D).
        device: ``cpu``, ``cuda`` or ``auto``.
        checkpoint_name: which checkpoint of each fold.
        num_processes: 1 = preprocess and export in this process; more = nnU-Net's worker pools.
        folds: folds to ensemble; default every fold that has the checkpoint (else ``all``).
        tile_step_size: sliding-window step as a fraction of the patch (nnU-Net's 0.5).
        overwrite: replace existing predictions in ``output_dir``.

    Returns:
        ``output_dir``.

    Raises:
        PredictionInputError: bad model folder or input images; FileExistsError: predictions exist.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from mae3d.finetuning.network import build_from_plans
    from mae3d.utils.device import resolve_device

    model_dir, input_dir, output_dir = Path(model_dir), Path(input_dir), Path(output_dir)
    for name in ("plans.json", "dataset.json"):
        if not (model_dir / name).is_file():
            raise PredictionInputError(f"{model_dir / name}: missing (not a trained model folder)")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    device = resolve_device(device)
    plans = read_json(model_dir / "plans.json")
    dataset_json = read_json(model_dir / "dataset.json")
    folds = list(folds) if folds is not None else find_folds(model_dir, checkpoint_name)
    weights, ckpt = _load_folds(model_dir, folds, checkpoint_name)

    plans_manager = PlansManager(plans)
    configuration = ckpt["init_args"]["configuration"]
    cm = plans_manager.get_configuration(configuration)
    num_channels = determine_num_input_channels(plans_manager, cm, dataset_json)
    ending = dataset_json["file_ending"]
    cases = _input_cases(input_dir, ending, num_channels)
    existing = [c for c in cases if (output_dir / f"{c}{ending}").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir / (existing[0] + ending)}: prediction exists (pass overwrite / "
                              "--overwrite to replace predictions)")

    label_manager = plans_manager.get_label_manager(dataset_json)
    network = build_from_plans(cm.configuration, num_channels, label_manager.num_segmentation_heads,
                               deep_supervision=False, source=str(model_dir / "plans.json"))
    network.load_state_dict(weights[0])
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, cm, weights, dataset_json,
                                    ckpt.get("trainer_name", "FinetuneTrainer"),
                                    ckpt.get("inference_allowed_mirroring_axes"))

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".predict.", dir=output_dir) as tmp:
        inputs = [cases[c] for c in sorted(cases)]
        if num_processes == 1:
            predictor.predict_from_files_sequential(inputs, tmp, save_probabilities=False, overwrite=True)
        else:
            predictor.predict_from_files(inputs, tmp, save_probabilities=False, overwrite=True,
                                         num_processes_preprocessing=num_processes,
                                         num_processes_segmentation_export=num_processes)
        for f in Path(tmp).iterdir():
            if f.is_file():
                os.replace(f, output_dir / f.name)
    write_json(output_dir / "mae3d_predict.json", {
        "model_dir": str(model_dir.resolve()), "folds": folds, "checkpoint_name": checkpoint_name,
        "mirroring": mirroring, "device": device, "tile_step_size": tile_step_size,
        "cases": sorted(cases),
    })
    return output_dir
