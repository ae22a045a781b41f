"""End to end: finetune() on real brain MRI, predict(), evaluate; baselines; errors before training."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from mae3d.config import ConfigError, to_dict
from mae3d.evaluation.evaluate import evaluate_folders
from mae3d.evaluation.predict import PredictionInputError, predict
from mae3d.finetuning import DatasetError, PlanError, ScheduleConfig, finetune
from mae3d.io.atomic import read_json
from mae3d.transfer import load_training_checkpoint

LABELS = {"background": 0, "brain": 1}


@pytest.fixture(scope="module")
def finetuned(prepared_fixed, brain_dataset, tiny_checkpoint, fast_cfg):
    """A pre-trained fine-tune: 2 epochs x 3 iterations, then nnU-Net's final validation.

    Uses the output folder of ``prepared_fixed``: the same plans, so planning and preprocessing are reused.
    """
    out, _ = prepared_fixed
    cfg = fast_cfg(epochs=2, iterations_per_epoch=3, final_validation=True, validation_mirroring=False)
    return out, cfg, finetune(brain_dataset, tiny_checkpoint, out, cfg)


@pytest.mark.slow
def test_pretrained_finetune_writes_an_nnunet_model_folder(finetuned, tiny_checkpoint):
    out, cfg, model_dir = finetuned
    assert model_dir.parent == out / "Dataset901_BrainExtraction"
    assert model_dir.name.startswith("FinetuneTrainer__mae3dPlans_tiny-mae-")
    assert model_dir.name.endswith("_warmup__3d_fullres")
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (model_dir / name).is_file()
    fold = model_dir / "fold_all"
    for name in ("checkpoint_final.pth", "progress.png", "transfer_report.json", "config.json"):
        assert (fold / name).is_file(), name
    saved = read_json(fold / "config.json")
    assert saved["config"] == to_dict(cfg) and "git_commit" in saved["provenance"]
    assert read_json(model_dir / "plans.json")["mae3d_pretrain"]["weights_loaded"] is True
    report = read_json(fold / "transfer_report.json")
    assert len(report["loaded"]) > 0 and not report["adapted"]
    ckpt = load_training_checkpoint(fold / "checkpoint_final.pth")
    assert ckpt["trainer_name"] == "FinetuneTrainer" and ckpt["current_epoch"] == 2
    assert ckpt["logging"]["lrs"] == pytest.approx([1e-3, 1e-3])  # W=1: peak, then poly from the peak
    # the whole network trained: the encoder moved away from the pre-trained weights
    pre = torch.load(tiny_checkpoint, weights_only=True)["network_weights"]
    key = "encoder.stages.0.blocks.0.conv1.conv.weight"
    assert not torch.equal(ckpt["network_weights"][key], pre[key])
    summary = read_json(fold / "validation" / "summary.json")
    assert math.isfinite(summary["foreground_mean"]["Dice"])


@pytest.mark.slow
def test_predict_and_evaluate_the_held_out_case(finetuned, brain_dataset, tmp_path):
    _, _, model_dir = finetuned
    pred = predict(model_dir, brain_dataset / "imagesTs", tmp_path / "pred", device="cpu")
    assert (pred / "robex_t1.nii.gz").is_file()
    assert read_json(pred / "mae3d_predict.json")["folds"] == ["all"]
    result = evaluate_folders(pred, brain_dataset / "labelsTs", labels=LABELS, write=False)
    for metric in ("dice", "nsd", "hd95"):  # HD95 of an empty prediction would be capped, still finite
        assert math.isfinite(result.foreground_mean[metric]), metric
    assert 0.0 <= result.foreground_mean["dice"] <= 1.0 and 0.0 <= result.foreground_mean["nsd"] <= 1.0
    with pytest.raises(FileExistsError, match=r"robex_t1\.nii\.gz: prediction exists"):
        predict(model_dir, brain_dataset / "imagesTs", pred, device="cpu")
    with pytest.raises(PredictionInputError, match="CASE_XXXX"):
        predict(model_dir, brain_dataset / "labelsTs", tmp_path / "p2", device="cpu")


@pytest.mark.slow
def test_predict_and_evaluate_commands(finetuned, brain_dataset, tmp_path, capsys):
    """``mae3d predict`` then ``mae3d evaluate``: summary.json / metrics.csv with finite means."""
    from mae3d.cli.main import main

    _, _, model_dir = finetuned
    pred = tmp_path / "pred_cli"
    assert main(["predict", str(model_dir), str(brain_dataset / "imagesTs"), str(pred), "--folds", "all",
                 "--device", "cpu"]) == 0
    assert read_json(pred / "mae3d_predict.json")["folds"] == ["all"]
    assert main(["evaluate", str(pred), str(brain_dataset / "labelsTs"), "--dataset-json",
                 str(brain_dataset / "dataset.json"), "--tolerance", "4"]) == 0
    printed = capsys.readouterr().out
    assert "brain" in printed and "NSD@4mm" in printed
    summary = read_json(pred / "summary.json")
    assert summary["n_cases"] == 1 and summary["labels"] == {"brain": 1}
    assert all(math.isfinite(summary["foreground_mean"][m]) for m in ("dice", "nsd", "hd95"))
    assert (pred / "metrics.csv").read_text().startswith("case,label,name,dice,nsd,hd95")


@pytest.mark.slow
def test_prediction_refuses_a_tampered_model_folder(finetuned, brain_dataset, tmp_path):
    """A class name off the allowlist in plans.json, or a pickle payload as the fold checkpoint."""
    import os
    import shutil

    from mae3d.models import UnsafeClassError
    from mae3d.transfer import UnsafeCheckpointError

    _, _, model_dir = finetuned
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad, ignore=shutil.ignore_patterns("validation"))
    plans = read_json(bad / "plans.json")
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "subprocess.Popen"
    (bad / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(UnsafeClassError, match=r"plans\.json: class 'subprocess\.Popen' is not allowed"):
        predict(bad, brain_dataset / "imagesTs", tmp_path / "p", device="cpu")
    shutil.copyfile(model_dir / "plans.json", bad / "plans.json")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"network_weights": {}, "x": Evil()}, bad / "fold_all" / "checkpoint_final.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        predict(bad, brain_dataset / "imagesTs", tmp_path / "p", device="cpu")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_finished_or_different_runs_are_never_overwritten(finetuned, brain_dataset, tiny_checkpoint):
    out, cfg, _ = finetuned
    with pytest.raises(FileExistsError, match="holds a finished run; pass --continue"):
        finetune(brain_dataset, tiny_checkpoint, out, cfg)
    with pytest.raises(FileExistsError, match=r"different config \(differs in \['epochs'\]\)"):
        finetune(brain_dataset, tiny_checkpoint, out, type(cfg)(**{**cfg.__dict__, "epochs": 3}))


@pytest.mark.slow
def test_fixed_from_scratch_baseline(finetuned, brain_dataset, tiny_checkpoint, fast_cfg):
    out, _, _ = finetuned
    cfg = fast_cfg(baseline="fixed", iterations_per_epoch=1)
    model_dir = finetune(brain_dataset, tiny_checkpoint, out, cfg)
    assert "_scratch_warmup__" in model_dir.name
    plans = read_json(model_dir / "plans.json")
    assert plans["mae3d_pretrain"]["weights_loaded"] is False
    assert plans["configurations"]["3d_fullres"]["spacing"] == [4.0, 4.0, 4.0]  # same fixed plans
    fold = model_dir / "fold_all"
    assert not (fold / "transfer_report.json").exists()
    assert load_training_checkpoint(fold / "checkpoint_final.pth")["logging"]["lrs"] == pytest.approx([1e-2])


@pytest.mark.slow
def test_dynamic_baseline_uses_nnunets_own_plans(finetuned, brain_dataset, fast_cfg):
    out, _, _ = finetuned
    cfg = fast_cfg(baseline="dynamic", schedule=ScheduleConfig(), iterations_per_epoch=1)  # its defaults
    model_dir = finetune(brain_dataset, None, out, cfg)
    assert model_dir.name == "FinetuneTrainer__nnUNetResEncLPlans_poly__3d_fullres"
    plans = read_json(model_dir / "plans.json")
    conf = plans["configurations"]["3d_fullres"]
    assert plans["mae3d_pretrain"] is None and plans["experiment_planner_used"] == "nnUNetPlannerResEncL"
    assert conf["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32  # nnU-Net's ResEnc widths
    assert conf["patch_size"] == [32, 32, 32] and conf["data_identifier"] == "nnUNetPlans_3d_fullres"
    ckpt = load_training_checkpoint(model_dir / "fold_all" / "checkpoint_final.pth")
    assert ckpt["logging"]["lrs"] == pytest.approx([1e-2])


@pytest.mark.slow
def test_linear_probe_trains_only_the_probe(finetuned, brain_dataset, tiny_checkpoint, fast_cfg, tmp_path):
    out, _, _ = finetuned
    cfg = fast_cfg(schedule=ScheduleConfig(name="linear-probe", warmup_epochs=0), iterations_per_epoch=1)
    model_dir = finetune(brain_dataset, tiny_checkpoint, out, cfg)
    assert read_json(model_dir / "plans.json")["configurations"]["3d_fullres"]["mae3d_head"] == "linear_probe"
    weights = load_training_checkpoint(model_dir / "fold_all" / "checkpoint_final.pth")["network_weights"]
    pre = torch.load(tiny_checkpoint, weights_only=True)["network_weights"]
    enc = [k for k in weights if k.startswith("encoder.stages.")]
    assert enc and all(torch.equal(weights[k], pre[k]) for k in enc)
    assert any(k.startswith("probe.") for k in weights) and not any(k.startswith("decoder.") for k in weights)
    pred = predict(model_dir, brain_dataset / "imagesTs", tmp_path / "probe_pred", device="cpu")
    assert (pred / "robex_t1.nii.gz").is_file()


# ---- errors before any training (fast) -------------------------------------------------------------

def test_patch_the_checkpoint_cannot_host_fails_before_training(prepared_fixed, brain_dataset,
                                                                  tiny_checkpoint, fast_cfg):
    out, prepared = prepared_fixed
    plans_files = sorted(prepared.preprocessed_dir.glob("*.json"))
    with pytest.raises(PlanError, match=r"cannot host patch \[40, 40, 40\]"):
        finetune(brain_dataset, tiny_checkpoint, out, fast_cfg(patch_size=(40, 40, 40), batch_size=4))
    assert sorted(prepared.preprocessed_dir.glob("*.json")) == plans_files  # nothing written


def test_inconsistent_inputs_are_refused(brain_dataset, tiny_checkpoint, tmp_path, fast_cfg):
    with pytest.raises(PlanError, match=r"dynamic baseline .* cannot load a checkpoint"):
        finetune(brain_dataset, tiny_checkpoint, tmp_path, fast_cfg(baseline="dynamic",
                                                                    schedule=ScheduleConfig(name="poly")))
    with pytest.raises(PlanError, match="fixed plans copy the checkpoint"):
        finetune(brain_dataset, None, tmp_path, fast_cfg())
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        finetune(brain_dataset, tmp_path / "nope.pth", tmp_path, fast_cfg())


def test_bad_dataset_fails_before_training(make_small_dataset, tiny_checkpoint, tmp_path, fast_cfg):
    root = make_small_dataset()
    (root / "labelsTr" / "case0.nii.gz").unlink()
    with pytest.raises(DatasetError, match="label of case 'case0' is missing"):
        finetune(root, tiny_checkpoint, tmp_path / "out", fast_cfg())


def _config_file(path, cfg):
    path.write_text(json.dumps(to_dict(cfg)))
    return str(path)


def test_cli_finetunes_from_an_openmind_folder(prepared_fixed, brain_dataset, openmind_folder, fast_cfg,
                                               tmp_path, capsys):
    """``mae3d finetune DATASET --checkpoint <nnssl model folder>``: plans like it, its encoder loaded
    (and, with the frozen schedule, still bit-identical after the optimisation steps)."""
    from mae3d.cli.main import main

    out, _ = prepared_fixed  # same spacing/normalisation as the tiny mae3d checkpoint: data are reused
    cfg = _config_file(tmp_path / "fast.json", fast_cfg(iterations_per_epoch=2))
    argv = ["finetune", str(brain_dataset), "--checkpoint", str(openmind_folder), "--schedule", "frozen",
            "--fold", "all", "--device", "cpu", "-o", str(out), "--config", cfg,
            "--set", "schedule.warmup_epochs=1"]
    assert main(argv) == 0
    (model_dir,) = (out / "Dataset901_BrainExtraction").glob(
        "FinetuneTrainer__mae3dPlans_ResEncXS-OpenMind-MAE-*_frozen__3d_fullres")
    assert f"model folder: {model_dir} (fold_all)" in capsys.readouterr().out
    plans = read_json(model_dir / "plans.json")
    assert plans["mae3d_pretrain"]["method"] == "nnssl:BaseMAETrainer_BS8"
    assert plans["configurations"]["3d_fullres"]["spacing"] == [4.0, 4.0, 4.0]
    fold = model_dir / "fold_all"
    report = read_json(fold / "transfer_report.json")
    assert report["checkpoint"] == str(openmind_folder.resolve()) and len(report["loaded"]) > 50
    nnssl_weights = torch.load(openmind_folder / "checkpoint_final.pth", weights_only=True)["network_weights"]
    trained = load_training_checkpoint(fold / "checkpoint_final.pth")["network_weights"]
    encoder = [k for k in nnssl_weights if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert encoder and all(torch.equal(trained[k], nnssl_weights[k]) for k in encoder)
    decoder = [k for k in trained if k.startswith("decoder.stages.")]
    assert any(not torch.equal(trained[k], nnssl_weights[k]) for k in decoder)  # fresh init + trained


def test_cli_reports_bad_inputs_in_one_line_before_training(make_small_dataset, tiny_checkpoint, tmp_path,
                                                            capsys):
    """Bad dataset / unsafe checkpoint: exit status 2, one line naming the file, nothing written or run."""
    import os

    from mae3d.cli.main import main

    root = make_small_dataset()
    (root / "labelsTr" / "case1.nii.gz").unlink()
    out = tmp_path / "out"
    assert main(["finetune", str(root), "--checkpoint", str(tiny_checkpoint), "-o", str(out),
                 "--fold", "all", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mae3d finetune: error: ")
    assert "case1.nii.gz: label of case 'case1' is missing" in err
    assert "\n" not in err and not out.exists()

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": Evil()}, evil)
    root2 = make_small_dataset(name="Dataset953_Fine")
    assert main(["finetune", str(root2), "--checkpoint", str(evil), "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "evil.pth: refused to load with weights_only=True" in err and "\n" not in err
    assert not (tmp_path / "pwned").exists() and not out.exists()


def test_cli_maps_options_to_the_config(monkeypatch, tmp_path):
    import mae3d.finetuning
    from mae3d.cli import finetune as cli

    seen = {}

    def fake(dataset, checkpoint, out, cfg, *, resume):
        seen.update(dataset=dataset, checkpoint=checkpoint, out=out, cfg=cfg, resume=resume)
        return tmp_path

    monkeypatch.setattr(mae3d.finetuning, "finetune", fake)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["finetune", "D/Dataset001_X", "--checkpoint", "c.pth", "--schedule", "sawtooth",
                              "--fold", "all", "--device", "cpu", "--from-scratch", "-o", "o", "--continue",
                              "--set", "epochs=3", "--set", "schedule.full_warmup_epochs=7"])
    assert args.func(args) == 0
    cfg = seen["cfg"]
    assert (cfg.schedule.name, cfg.fold, cfg.device, cfg.baseline, cfg.from_scratch, cfg.plans) == \
        ("sawtooth", "all", "cpu", "fixed", True, "fixed")
    assert (cfg.epochs, cfg.schedule.full_warmup_epochs, seen["resume"]) == (3, 7, True)
    args = parser.parse_args(["finetune", "D", "--fold", "2"])
    args.func(args)
    assert seen["cfg"].fold == 2 and seen["checkpoint"] is None and seen["resume"] is False
    assert (seen["cfg"].baseline, seen["cfg"].schedule_name) == ("none", "sawtooth")
    # --baseline, and --plans dynamic as its older spelling; contradictions are refused
    for argv, baseline in ((["--baseline", "dynamic"], "dynamic"), (["--plans", "dynamic"], "dynamic"),
                           (["--baseline", "fixed", "--from-scratch"], "fixed"),
                           (["--plans", "fixed"], "none")):
        args = parser.parse_args(["finetune", "D", *argv])
        args.func(args)
        assert seen["cfg"].baseline == baseline, argv
    with pytest.raises(ConfigError, match="--baseline none contradicts --from-scratch"):
        args = parser.parse_args(["finetune", "D", "--baseline", "none", "--from-scratch"])
        args.func(args)
    with pytest.raises(ConfigError, match="two different baselines"):
        args = parser.parse_args(["finetune", "D", "--plans", "dynamic", "--from-scratch"])
        args.func(args)


@pytest.mark.slow
def test_resume_of_a_finished_run_only_revalidates(finetuned, brain_dataset, tiny_checkpoint):
    out, cfg, model_dir = finetuned
    fold = model_dir / "fold_all"
    before = load_training_checkpoint(fold / "checkpoint_final.pth")
    summary = fold / "validation" / "summary.json"
    summary.unlink()
    assert finetune(brain_dataset, tiny_checkpoint, out, cfg, resume=True) == model_dir
    after = load_training_checkpoint(fold / "checkpoint_final.pth")
    assert after["current_epoch"] == before["current_epoch"] == 2
    assert all(torch.equal(after["network_weights"][k], v) for k, v in before["network_weights"].items())
    assert summary.is_file()


@pytest.mark.slow
def test_two_channel_dataset_adapts_and_warms_the_input_projection(make_small_dataset, tiny_checkpoint,
                                                                     tmp_path, fast_cfg):
    """1-channel checkpoint -> 2-channel data: the stem conv is repeated / 2 and, with the encoder frozen,
    only that input projection (and the decoder) trains."""
    root = make_small_dataset(name="Dataset952_TwoChannels", channels=2)
    cfg = fast_cfg(schedule=ScheduleConfig(name="frozen", warmup_epochs=1), iterations_per_epoch=1)
    model_dir = finetune(root, tiny_checkpoint, tmp_path, cfg)
    fold = model_dir / "fold_all"
    report = read_json(fold / "transfer_report.json")
    assert report["input_channels_adapted"] is True
    assert report["adapted"]["encoder.stem.convs.0.conv.weight"]["network_shape"][1] == 2
    pre = torch.load(tiny_checkpoint, weights_only=True)["network_weights"]
    w = load_training_checkpoint(fold / "checkpoint_final.pth")["network_weights"]
    in_proj = "encoder.stem.convs.0.conv.weight"
    assert w[in_proj].shape[1] == 2 and not torch.equal(w[in_proj], pre[in_proj].repeat(1, 2, 1, 1, 1) / 2)
    others = [k for k in pre if k.startswith(("encoder.stages.", "encoder.stem.convs.0.norm"))]
    assert others and all(torch.equal(w[k], pre[k]) for k in others)


def test_numbered_fold_needs_five_cases(prepared_fixed, brain_dataset, tiny_checkpoint, fast_cfg):
    out, _ = prepared_fixed
    with pytest.raises(PlanError, match=r"fold 0 needs nnU-Net's 5-fold split.*found 2"):
        finetune(brain_dataset, tiny_checkpoint, out, fast_cfg(fold=0))


@pytest.mark.slow
def test_seed_makes_a_cpu_run_repeatable(prepared_fixed, brain_dataset, tiny_checkpoint, fast_cfg, tmp_path):
    """Same seed, same weights after training (in-process augmentation); another seed, other weights."""
    from mae3d.finetuning.planning import PREPROCESSED_DIRNAME

    shared, _ = prepared_fixed

    def trained_weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        out = tmp_path / name
        out.mkdir()
        (out / PREPROCESSED_DIRNAME).symlink_to(shared / PREPROCESSED_DIRNAME)  # reuse plans + data
        model_dir = finetune(brain_dataset, tiny_checkpoint, out, fast_cfg(baseline="fixed", seed=seed))
        assert read_json(model_dir / "fold_all" / "config.json")["config"]["seed"] == seed
        return load_training_checkpoint(model_dir / "fold_all" / "checkpoint_final.pth")["network_weights"]

    a, b, c = trained_weights("a", 7), trained_weights("b", 7), trained_weights("c", 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
