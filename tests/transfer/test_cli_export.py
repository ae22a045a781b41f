"""``mae3d export``: nnssl folder and nnU-Net state dict from the command line, and its one-line errors."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

import mae3d.cli.main as cli_main
from mae3d.models import network_from_description
from mae3d.transfer.checkpoint import save_checkpoint, strip_training_state
from mae3d.transfer.nnssl import import_nnssl


@pytest.fixture()
def mae3d_cli(monkeypatch):
    """``mae3d`` main() with the export command registered (the lead adds it to COMMANDS)."""
    if "export" not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", (*cli_main.COMMANDS, "export"))
    return cli_main.main


@pytest.fixture()
def ckpt_file(tmp_path, ckpt):
    return save_checkpoint(tmp_path / "pretrained.pth", ckpt)


def test_export_nnssl_round_trips(mae3d_cli, ckpt_file, ckpt, tmp_path, capsys):
    out = tmp_path / "nnssl_model"
    assert mae3d_cli(["export", str(ckpt_file), "--to", "nnssl", str(out)]) == 0
    assert "adaptation_plan.json" in capsys.readouterr().out
    back = import_nnssl(out)
    expected = strip_training_state(ckpt)
    assert back["pretrain"] == expected["pretrain"] and back["architecture"] == expected["architecture"]
    assert all(torch.equal(back["network_weights"][k], v) for k, v in expected["network_weights"].items())
    # an nnssl folder is itself accepted as CKPT (nnssl -> nnU-Net)
    assert mae3d_cli(["export", str(out), "--to", "nnunet", str(tmp_path / "from_nnssl.pth")]) == 0


def test_export_nnunet_with_channels_loads_in_nnunet(mae3d_cli, ckpt_file, ckpt, xs_arch, tmp_path, capsys):
    out = tmp_path / "weights" / "pretrained_2ch.pth"
    assert mae3d_cli(["export", str(ckpt_file), "--to", "nnunet", str(out), "--input-channels", "2"]) == 0
    assert "-pretrained_weights" in capsys.readouterr().out
    net = network_from_description(xs_arch, 2, 4)
    load_pretrained_weights(net, str(out))  # nnU-Net's own loader accepts it
    w1 = ckpt["network_weights"]["encoder.stem.convs.0.conv.weight"]
    assert torch.allclose(net.encoder.stem.convs[0].conv.weight, w1.repeat(1, 2, 1, 1, 1) / 2)


@pytest.mark.parametrize(("extra", "message"), [
    (["--to", "nnssl", "--input-channels", "2"], "--input-channels applies to --to nnunet only"),
    (["--to", "nnunet", "--input-channels", "0"], "--input-channels must be >= 1"),
])
def test_option_errors(mae3d_cli, ckpt_file, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert mae3d_cli(["export", str(ckpt_file), *extra[:2], str(out), *extra[2:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_existing_output_and_bad_checkpoint_are_one_line_errors(mae3d_cli, ckpt_file, tmp_path, capsys):
    out = tmp_path / "model"
    assert mae3d_cli(["export", str(ckpt_file), "--to", "nnssl", str(out)]) == 0
    capsys.readouterr()
    assert mae3d_cli(["export", str(ckpt_file), "--to", "nnssl", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert mae3d_cli(["export", str(garbage), "--to", "nnunet", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mae3d export: error: ") and "garbage.pth" in err and "\n" not in err
