"""mae3d checkpoint format: weights-only round trip, validation, refusal of malicious pickles."""

from __future__ import annotations

import copy
import os
import pickle
import random

import numpy as np
import pytest
import torch

from mae3d.models import UnsafeClassError
from mae3d.transfer.checkpoint import (
    TRAINING_STATE_KEYS,
    CheckpointError,
    UnsafeCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    strip_training_state,
    to_weights_only_safe,
    validate,
)


def test_round_trip_loads_with_plain_weights_only(tmp_path, ckpt, pretrained_net):
    path = save_checkpoint(tmp_path / "checkpoint_latest.pth", ckpt)
    raw = torch.load(path, weights_only=True)  # what any third party (nnssl fork, nnU-Net) would do
    assert raw["format"] == "mae3d-pretrain" and raw["version"] == 1
    loaded = load_checkpoint(path)
    assert loaded["architecture"] == ckpt["architecture"]
    assert loaded["pretrain"] == ckpt["pretrain"] and loaded["config"] == ckpt["config"]
    assert loaded["epoch"] == 7 and loaded["loader_seed"] == 1234
    ref = pretrained_net.state_dict()
    assert list(loaded["network_weights"]) == list(ref)
    for k, v in ref.items():
        assert torch.equal(loaded["network_weights"][k], v), k
    # optimizer state survives too
    assert loaded["optimizer_state"]["param_groups"][0]["momentum"] == 0.99


def test_save_refuses_to_overwrite(tmp_path, ckpt):
    save_checkpoint(tmp_path / "c.pth", ckpt)
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "c.pth", ckpt)
    save_checkpoint(tmp_path / "c.pth", ckpt, overwrite=True)  # rolling checkpoint_latest


def test_rng_state_round_trip(tmp_path, ckpt):
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    ckpt = dict(ckpt, rng_state=state)
    save_checkpoint(tmp_path / "c.pth", ckpt)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng_state"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


class _Evil:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_checkpoint_is_refused_and_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"format": "mae3d-pretrain", "network_weights": {"w": torch.zeros(1)}, "x": _Evil(str(marker))}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused to load") as info:
        load_checkpoint(path)
    if writer == "torch":
        assert "system" in str(info.value)  # names the global it refused
    assert not marker.exists()


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_checkpoint(tmp_path / "garbage.pth")


def test_validate_rejects_values_weights_only_cannot_read(ckpt):
    bad = dict(ckpt, config={"lr": np.float64(1e-2)})  # numpy scalar: not weights-only loadable
    with pytest.raises(CheckpointError, match=r"config\.lr.*numpy"):
        validate(bad)
    assert to_weights_only_safe({"lr": np.float64(1e-2)}) == {"lr": 1e-2}
    assert isinstance(to_weights_only_safe(np.zeros(2)), torch.Tensor)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c: c.pop("keys"), "missing keys"),
    (lambda c: c.update(version=2), "unsupported checkpoint version"),
    (lambda c: c["pretrain"].update(in_channels=2), "does not match pretrain.in_channels"),
    (lambda c: c["pretrain"].update(spacing=[1.0, 1.0]), "pretrain.spacing"),
    (lambda c: c["keys"].update(encoder="encoder.nothing"), "no network weight under keys.encoder"),
    (lambda c: c["network_weights"].pop("encoder.stem.convs.0.all_modules.0.weight"), "all_modules.0.weight"),
])
def test_validate_names_the_problem(ckpt, mutate, message):
    bad = copy.deepcopy(strip_training_state(ckpt))
    mutate(bad)
    with pytest.raises(CheckpointError, match=message):
        validate(bad, source="x.pth")


def test_validate_rejects_unlisted_class(ckpt):
    bad = copy.deepcopy(strip_training_state(ckpt))
    bad["architecture"]["arch_kwargs"]["norm_op"] = "builtins.eval"
    with pytest.raises(UnsafeClassError, match=r"builtins\.eval"):
        validate(bad)


def test_strip_training_state(ckpt):
    stripped = strip_training_state(ckpt)
    assert not set(TRAINING_STATE_KEYS) & set(stripped)
    assert "optimizer_state" in ckpt  # original untouched
    validate(stripped)
