"""FinetuneTrainer on real preprocessed data: frozen parameters, phase switches, resume, transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mae3d.finetuning import ScheduleConfig, TrainerSetup, make_schedule, parameter_groups
from mae3d.finetuning.environment import nnunet_environment
from mae3d.finetuning.network import DEFAULT_KEYS
from mae3d.finetuning.planning import CONFIGURATION
from mae3d.finetuning.pretrained import read_checkpoint
from mae3d.finetuning.trainer import create_trainer
from mae3d.io.atomic import read_json
from mae3d.transfer import unwrap


def _trainer(prepared_fixed, brain_dataset, results: Path, cfg, ckpt_path, *, resume=False):
    _, prepared = prepared_fixed
    pre = read_checkpoint(ckpt_path)
    setup = TrainerSetup(cfg=cfg, schedule=make_schedule(cfg.schedule_name, cfg.schedule, epochs=cfg.epochs,
                                                           peak_lr=1e-3),
                         pretrained=pre, keys=DEFAULT_KEYS, in_proj_adapted=False, export_workers=1)

    def env():
        return nnunet_environment(raw=brain_dataset.parent, preprocessed=prepared.preprocessed_dir.parent,
                                  results=results, da_workers=0)

    with env():
        trainer = create_trainer(prepared.plans, CONFIGURATION, "all", prepared.dataset_json, "cpu", setup,
                                 resume=resume)
    return trainer, env


def test_frozen_encoder_gets_no_gradients_and_no_optimizer_state(prepared_fixed, brain_dataset,
                                                                 tiny_checkpoint, tmp_path, fast_cfg):
    cfg = fast_cfg(schedule=ScheduleConfig(name="frozen", warmup_epochs=1), iterations_per_epoch=2)
    trainer, env = _trainer(prepared_fixed, brain_dataset, tmp_path, cfg, tiny_checkpoint)
    with env():
        trainer.run_training()
    net = unwrap(trainer.network)
    groups = parameter_groups(net, DEFAULT_KEYS)
    encoder = [p for g in ("encoder", "in_proj") for _, p in groups[g]]
    decoder = [p for _, p in groups["decoder"]]
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in decoder}
    assert not any(p in trainer.optimizer.state for p in encoder)
    assert all(not p.requires_grad and p.grad is None for p in encoder)
    # the decoder did train: momentum buffers exist and are non-zero (except for the deep-supervision
    # heads, which are unused with deep supervision off and so never get a gradient)
    n_heads = len(net.decoder.seg_layers)
    unused = {f"decoder.seg_layers.{i}." for i in range(n_heads - 1)}
    without_state = [n for n, p in groups["decoder"] if p not in trainer.optimizer.state]
    assert without_state and all(n[:len("decoder.seg_layers.0.")] in unused for n in without_state)
    assert any(trainer.optimizer.state[p]["momentum_buffer"].abs().sum() > 0
               for p in decoder if p in trainer.optimizer.state)
    # after two SGD steps the encoder still equals the pre-trained weights, bit for bit
    pre = torch.load(tiny_checkpoint, weights_only=True)["network_weights"]
    state = net.state_dict()
    enc_keys = [k for k in pre if k.startswith(("encoder.stem.", "encoder.stages."))]
    assert enc_keys and all(torch.equal(state[k], pre[k]) for k in enc_keys)
    report = read_json(Path(trainer.output_folder) / "transfer_report.json")
    assert report["input_channels_adapted"] is False and len(report["loaded"]) > 0


def _buffers(optimizer: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    return {id(p): st["momentum_buffer"].clone() for p, st in optimizer.state.items()}


@pytest.mark.parametrize("reset", [True, False], ids=["reset_momentum", "keep_momentum"])
def test_sawtooth_resumes_at_the_phase_change_and_resets_or_keeps_momentum(
        reset, prepared_fixed, brain_dataset, tiny_checkpoint, tmp_path, fast_cfg):
    """Decoder-only epochs 0-2, interrupted exactly at the phase change, resumed: the resumed run has the
    saved decoder momentum, then unfreezes the encoder with all momentum reset (nnssl's sawtooth builds a
    new optimizer there) or, with reset_momentum=false, the decoder's carried over and the encoder's new."""
    saw = ScheduleConfig(name="sawtooth", decoder_warmup_epochs=2, decoder_poly_epochs=1,
                         full_warmup_epochs=2, reset_momentum=reset)
    # run A: the three decoder-only epochs, then stop (checkpoint_final = state after epoch 2)
    cfg_a = fast_cfg(schedule=saw, epochs=3, iterations_per_epoch=1)
    a, env = _trainer(prepared_fixed, brain_dataset, tmp_path, cfg_a, tiny_checkpoint)
    with env():
        a.run_training()
    assert a.logger.get_value("lrs", step=None) == pytest.approx([5e-4, 1e-3, 1e-3])
    groups = parameter_groups(a.network)
    n_decoder = len(groups["decoder"])
    saved = _buffers(a.optimizer)  # decoder parameters that received gradients
    assert 0 < len(saved) <= n_decoder and any(b.abs().sum() > 0 for b in saved.values())
    final = Path(a.output_folder) / "checkpoint_final.pth"

    # run B continues the same run to 5 epochs
    cfg_b = fast_cfg(schedule=saw, epochs=5, iterations_per_epoch=1)
    b, env = _trainer(prepared_fixed, brain_dataset, tmp_path, cfg_b, tiny_checkpoint, resume=True)
    with env():
        b.load_checkpoint(str(final))
        assert b.current_epoch == 3 and b.setup.schedule.phase(3) == "full_warmup"
        # the optimizer of the saved phase (decoder only) with its momentum, name by name
        names = {id(p): n for n, p in unwrap(b.network).named_parameters()}
        a_names = {id(p): n for n, p in unwrap(a.network).named_parameters()}
        restored = {names[k]: v for k, v in _buffers(b.optimizer).items()}
        assert len(b.optimizer.param_groups[0]["params"]) == n_decoder
        assert restored.keys() == {a_names[k] for k in saved}
        assert all(torch.equal(restored[a_names[k]], v) for k, v in saved.items())

        b.on_train_epoch_start()  # epoch 3: the encoder unfreezes
        params = b.optimizer.param_groups[0]["params"]
        assert len(params) == sum(1 for _ in unwrap(b.network).parameters())
        assert all(p.requires_grad for p in params)
        encoder = {id(p) for g in ("encoder", "in_proj") for _, p in parameter_groups(b.network)[g]}
        after = {names[k]: v for k, v in _buffers(b.optimizer).items()}
        assert not encoder & {id(p) for p in b.optimizer.state}  # encoder: fresh momentum either way
        if reset:
            assert after == {}  # every buffer starts from zero, as with a new optimizer
        else:
            assert after.keys() == restored.keys()  # decoder momentum carried over unchanged
            assert all(torch.equal(after[n], restored[n]) for n in after)
        b.run_training()
    # epochs 3-4: the whole-network warm-up restarts at half the peak
    assert b.logger.get_value("lrs", step=None) == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4, 1e-3])
    assert len(b.optimizer.state) > len(saved)  # the encoder trained too


def test_dynamic_baseline_trains_like_nnunets_default_trainer(brain_dataset, tmp_path, fast_cfg):
    """"No pre-training (dynamic)" = nnU-Net's nnUNetTrainer on nnU-Net's ResEnc plans: both trainers are
    built on the same real preprocessed data and every effective setting is compared."""
    import copy

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from mae3d.finetuning import prepare_plans
    from mae3d.finetuning.api import trainer_setup
    from mae3d.finetuning.planning import PREPROCESSED_DIRNAME
    from mae3d.finetuning.trainer import FinetuneTrainer

    # nnU-Net's own epochs / iterations / patch / batch: only the run's machinery differs
    cfg = fast_cfg(baseline="dynamic", schedule=ScheduleConfig(), epochs=1000, iterations_per_epoch=250,
                   val_iterations_per_epoch=50, patch_size=None)
    prepared = prepare_plans(brain_dataset, tmp_path / PREPROCESSED_DIRNAME, cfg, None)
    setup = trainer_setup(cfg, prepared, None)
    assert setup.pretrained is None and setup.schedule.name == "poly"
    with nnunet_environment(raw=brain_dataset.parent, preprocessed=tmp_path / PREPROCESSED_DIRNAME,
                            results=tmp_path / "results", da_workers=0):
        ours = create_trainer(prepared.plans, CONFIGURATION, "all", prepared.dataset_json, "cpu", setup,
                              resume=False)
        plans = {**copy.deepcopy(prepared.plans), "continue_training": False}
        ref = nnUNetTrainer(plans, CONFIGURATION, "all", copy.deepcopy(prepared.dataset_json),
                            torch.device("cpu"))
        ours.initialize()
        ref.initialize()

    conf = prepared.plans["configurations"][CONFIGURATION]
    assert prepared.plans["experiment_planner_used"] == "nnUNetPlannerResEncL"
    for name in ("initial_lr", "weight_decay", "num_epochs", "num_iterations_per_epoch",
                 "num_val_iterations_per_epoch", "save_every", "enable_deep_supervision", "batch_size",
                 "oversample_foreground_percent", "probabilistic_oversampling", "disable_checkpointing"):
        assert getattr(ours, name) == getattr(ref, name), name
    assert (ours.initial_lr, ours.enable_deep_supervision) == (1e-2, True)
    assert ours.batch_size == conf["batch_size"]
    assert ours.configuration_manager.patch_size == ref.configuration_manager.patch_size == conf["patch_size"]
    assert ours._get_deep_supervision_scales() == ref._get_deep_supervision_scales()

    # optimizer over the whole network: SGD, Nesterov, momentum 0.99, weight decay 3e-5
    (g_ours,), (g_ref,) = ours.optimizer.param_groups, ref.optimizer.param_groups
    assert type(ours.optimizer) is type(ref.optimizer) is torch.optim.SGD
    for key in ("momentum", "nesterov", "weight_decay", "dampening", "lr"):
        assert g_ours[key] == g_ref[key], key
    assert len(g_ours["params"]) == len(g_ref["params"]) == sum(1 for _ in ours.network.parameters())

    # lr: nnU-Net's PolyLRScheduler, no warm-up
    for epoch in (0, 1, 10, 500, 998, 999):
        ours.lr_scheduler.step(epoch)
        ref.lr_scheduler.step(epoch)
        lr = ref.optimizer.param_groups[0]["lr"]
        assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(lr), epoch

    # loss: Dice + CE behind deep supervision, the same weights per resolution
    assert type(ours.loss) is type(ref.loss) and type(ours.loss.loss) is type(ref.loss.loss)
    assert ours.loss.weight_factors == ref.loss.weight_factors and ours.loss.weight_factors[0] > 0
    assert (ours.loss.loss.weight_dice, ours.loss.loss.weight_ce) == (ref.loss.loss.weight_dice,
                                                                      ref.loss.loss.weight_ce)

    # the same network (nnU-Net's ResEnc with deep supervision outputs), parameter by parameter shape
    shapes = {k: v.shape for k, v in ours.network.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.network.state_dict().items()}
    assert unwrap(ours.network).decoder.deep_supervision is True

    # nnU-Net's training step (gradient clipping at 12, AMP on cuda), validation and augmentation
    for hook in ("train_step", "validation_step", "get_training_transforms", "get_validation_transforms",
                 "configure_rotation_dummyDA_mirroring_and_inital_patch_size", "_build_loss",
                 "get_dataloaders", "on_train_epoch_end", "on_validation_epoch_end"):
        assert getattr(FinetuneTrainer, hook) is getattr(nnUNetTrainer, hook), hook
