"""The demo: configuration, figures on real volumes, and a tiny end-to-end run that a rerun reuses."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from mae3d.benchmark.demo import PRETRAINED, SCRATCH, DemoConfig, demo_spec, run_demo
from mae3d.benchmark.demo_report import plot_loss_curves, plot_overlay
from mae3d.benchmark.spec import SpecError, load_spec
from mae3d.config import ConfigError, apply_overrides

REPO = Path(__file__).resolve().parents[2]


def test_config_is_validated_and_overridable():
    cfg = apply_overrides(DemoConfig(), ["pretrain_epochs=3", "patch_size=[32, 32, 32]", "task=cerebra"])
    assert cfg.pretrain_epochs == 3 and cfg.patch_size == (32, 32, 32) and cfg.task == "cerebra"
    with pytest.raises(ConfigError, match="task: unknown embedded dataset 'lungs'"):
        DemoConfig(task="lungs")
    with pytest.raises(ConfigError, match="finetune_iterations must be >= 1"):
        DemoConfig(finetune_iterations=0)


def test_demo_spec_compares_pretrained_with_the_fixed_baseline():
    spec = demo_spec(DemoConfig(finetune_lr=3e-3, seed=4, method="mae"))
    assert [m.name for m in spec.methods] == [PRETRAINED, SCRATCH] and spec.reference == SCRATCH
    assert spec.method(SCRATCH).baseline == "fixed" and spec.method(SCRATCH).plans_from == PRETRAINED
    assert spec.seeds == (4,) and "lr=0.003" in spec.budget
    recipe = spec.method(PRETRAINED).pretrain
    assert recipe is not None and {"method.name=\"mae\"", "train.seed=4"} <= set(recipe.overrides)
    ds = spec.dataset("heads")
    assert ds.embedded == "heads" and ds.spacing == 3.0 and ds.split.kind == "fixed"
    assert ds.split.test == ("mni2009c_t2",) and ds.split.train is None
    # the held-out image never enters pre-training
    assert spec.corpora[recipe.corpus].exclude == ("mni2009c_t2",)
    assert demo_spec(DemoConfig(exclude_test_images=False)).corpora[recipe.corpus].exclude == ()
    # a task with its own test split: the held-out images come from the dataset registry
    other = demo_spec(DemoConfig(task="brainextraction", test_cases=[]))
    assert other.dataset("brainextraction").split.test is None
    assert other.corpora[recipe.corpus].exclude == ("robex_t1",)


def test_packaged_demo_spec_file_is_what_mae3d_demo_runs():
    """benchmarks/specs/demo.yaml (what `mae3d benchmark run` reads) equals the default DemoConfig's spec."""
    from_file = load_spec(REPO / "benchmarks" / "specs" / "demo.yaml", check_paths=False).to_dict()
    from_config = demo_spec(DemoConfig()).to_dict()
    assert from_file == from_config


def test_figures_from_real_volumes(tmp_path, brain_raw):
    image = brain_raw / "imagesTs" / "robex_t1_0000.nii.gz"
    ref = brain_raw / "labelsTs" / "robex_t1.nii.gz"
    out = plot_overlay(image, ref, {"same": ref}, tmp_path / "overlay.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    pretrain = {"epoch": [0, 1, 2], "train_loss": [np.nan, 0.8, 0.7], "val_loss": [0.9, 0.8, 0.6]}
    curves = plot_loss_curves(pretrain,
                              {"a": {"train_losses": [-0.1, -0.3], "val_losses": [-0.2, -0.4]}},
                              tmp_path / "curves.png")
    assert curves.stat().st_size > 5_000


def test_cli_parses_sets(tmp_path):
    from mae3d.cli import demo as demo_cli
    from mae3d.cli.common import config_from_args

    parser = argparse.ArgumentParser()
    demo_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", str(tmp_path / "o"), "--device", "cpu", "--set", "finetune_epochs=2"])
    cfg = config_from_args(DemoConfig, args, device=args.device)
    assert cfg.device == "cpu" and cfg.finetune_epochs == 2 and args.out == str(tmp_path / "o")
    assert parser.parse_args(["demo"]).out == "runs/demo"


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_reused(tmp_path):
    cfg = apply_overrides(DemoConfig(), [
        "spacing=4", "patch_size=[32, 32, 32]", "mask_block_size=8", "pretrain_epochs=1",
        "pretrain_iterations=2", "finetune_epochs=1", "finetune_iterations=2", "warmup_epochs=1",
        "workers=2", "threads=1"])
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", cfg, progress=lines.append)
    assert [r["method"] for r in result.table] == [PRETRAINED, SCRATCH]
    assert all(0.0 <= r["dice"] <= 1.0 for r in result.table)
    assert set(result.figures) == {"loss_curves", "reconstruction", "dice", "overlay"}
    report = result.report.read_text()
    assert "| pretrained |" in report and "| scratch |" in report and "figures/overlay.png" in report
    assert "mni2009c_t2" in report  # the held-out head was kept out of pre-training
    assert "  table" not in result.format_table() and "pretrained" in result.format_table()
    assert result.seconds["pre-training pretrained"] > 0 and result.seconds["cell scratch"] > 0
    assert (tmp_path / "demo" / "report" / "report.md").is_file()  # the benchmark report of the same run
    # rerun: every cell and the pre-training are reused, nothing is recomputed
    again = run_demo(tmp_path / "demo", cfg, progress=lines.append)
    assert again.reused and again.table == result.table
    with pytest.raises(SpecError, match=r"holds a pre-training of another configuration|another definition"):
        run_demo(tmp_path / "demo", apply_overrides(cfg, ["pretrain_epochs=2"]), progress=None)
