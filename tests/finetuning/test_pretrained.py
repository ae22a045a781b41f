"""Checkpoints as fine-tuning reads them: nnssl/OpenMind files or folders; unsafe ones are refused."""

from __future__ import annotations

import os

import pytest
import torch

from mae3d.finetuning import build_from_plans
from mae3d.finetuning.planning import CONFIGURATION, derive_fixed_plans
from mae3d.finetuning.pretrained import file_sha256, read_checkpoint
from mae3d.io.atomic import read_json
from mae3d.models import UnsafeClassError
from mae3d.transfer import UnsafeCheckpointError, transfer_weights


def test_openmind_folder_and_file_read_alike(openmind_folder):
    weights_file = openmind_folder / "checkpoint_final.pth"
    from_folder, from_file = read_checkpoint(openmind_folder), read_checkpoint(weights_file)
    assert from_folder.sha256 == from_file.sha256 == file_sha256(weights_file)
    assert from_folder.tag().startswith("ResEncXS-OpenMind-MAE-")
    for pre in (from_folder, from_file):
        assert pre.pretrain["spacing"] == [4.0, 4.0, 4.0] and pre.downstream_patch() == (32, 32, 32)
        assert pre.pretrain["method"] == "nnssl:BaseMAETrainer_BS8" and pre.in_channels == 1
        assert pre.ckpt["provenance"]["source_format"] == "nnssl"
    # the plan only as adaptation_plan.json next to a bare weights file works too
    raw = torch.load(weights_file, weights_only=True)
    bare = openmind_folder.parent / "bare"
    bare.mkdir()
    torch.save({"network_weights": raw["network_weights"]}, bare / "checkpoint_final.pth")
    (bare / "adaptation_plan.json").write_text((openmind_folder / "adaptation_plan.json").read_text())
    assert read_checkpoint(bare / "checkpoint_final.pth").architecture == from_folder.architecture


def test_openmind_checkpoint_gives_fixed_plans_and_its_encoder(prepared_fixed, openmind_folder):
    """Plans like the nnssl checkpoint; the plans-built network receives exactly its stem + encoder."""
    _, prepared = prepared_fixed
    base = read_json(prepared.preprocessed_dir / "nnUNetResEncUNetLPlans.json")
    fingerprint = read_json(prepared.preprocessed_dir / "dataset_fingerprint.json")
    pre = read_checkpoint(openmind_folder)
    plans = derive_fixed_plans(base, fingerprint, pre, plans_name="from_openmind")
    conf = plans["configurations"][CONFIGURATION]
    assert conf["spacing"] == [4.0, 4.0, 4.0] and conf["patch_size"] == [32, 32, 32]
    assert conf["normalization_schemes"] == ["ZScoreNormalization"]
    assert conf["architecture"] == pre.architecture
    assert plans["mae3d_pretrain"]["checkpoint"] == str(openmind_folder.resolve())
    net = build_from_plans(conf, 2, 3, deep_supervision=False)  # 2 channels, 3 classes downstream
    report = transfer_weights(net, pre.ckpt)
    nnssl_weights = torch.load(openmind_folder / "checkpoint_final.pth", weights_only=True)["network_weights"]
    state = net.state_dict()
    encoder = [k for k in state if k.startswith(("encoder.stages.", "encoder.stem.convs.0.norm."))]
    assert encoder and all(torch.equal(state[k], nnssl_weights[k]) for k in encoder)
    in_proj = "encoder.stem.convs.0.conv.weight"
    assert torch.allclose(state[in_proj], nnssl_weights[in_proj].repeat(1, 2, 1, 1, 1) / 2)
    assert report.input_channels_adapted


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_openmind_folder_is_refused(tmp_path, openmind_folder):
    folder, marker = tmp_path / "evil_model", tmp_path / "pwned"
    folder.mkdir()
    torch.save({"network_weights": {}, "payload": _Evil(str(marker))}, folder / "checkpoint_final.pth")
    (folder / "adaptation_plan.json").write_text((openmind_folder / "adaptation_plan.json").read_text())
    with pytest.raises(UnsafeCheckpointError, match=r"checkpoint_final\.pth: refused to load"):
        read_checkpoint(folder)
    assert not marker.exists()


def test_non_allowlisted_class_in_adaptation_plan_is_refused(tmp_path, openmind_folder):
    raw = torch.load(openmind_folder / "checkpoint_final.pth", weights_only=True)
    raw["nnssl_adaptation_plan"]["architecture_plans"]["arch_kwargs"]["nonlin"] = "os.system"
    path = tmp_path / "checkpoint_final.pth"
    torch.save(raw, path)
    with pytest.raises(UnsafeClassError, match=r"'os\.system' is not allowed"):
        read_checkpoint(path)
