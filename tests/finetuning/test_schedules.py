"""Learning rates and trainable groups of each schedule at chosen epochs, computed by hand."""

from __future__ import annotations

import pytest

from mae3d.config import ConfigError, apply_overrides, to_dict
from mae3d.finetuning import FinetuneConfig, ScheduleConfig, make_schedule
from mae3d.finetuning.schedules import ALL_UNET, SCHEDULES
from mae3d.utils.device import resolve_device

P = 1e-3
DECODER = frozenset({"decoder", "in_proj"})


def sched(name: str, epochs: int = 1000, peak: float = P, **kw):
    return make_schedule(name, ScheduleConfig(name=name, **kw), epochs=epochs, peak_lr=peak)


def test_registry_has_the_documented_schedules():
    assert set(SCHEDULES.names()) == {"warmup", "sawtooth", "frozen", "linear-probe", "poly", "none"}


def test_each_arm_resolves_its_own_defaults():
    """Pre-trained: sawtooth at 1e-3, no deep supervision, momentum reset; fixed baseline: the same at 1e-2;
    dynamic baseline: nnU-Net's poly at 1e-2 with deep supervision."""
    pre, fixed, dyn = (FinetuneConfig(baseline=b) for b in ("none", "fixed", "dynamic"))
    assert [(c.schedule_name, c.peak_lr(), c.resolved_deep_supervision(), c.plans, c.from_scratch)
            for c in (pre, fixed, dyn)] == [("sawtooth", 1e-3, False, "fixed", False),
                                             ("sawtooth", 1e-2, False, "fixed", True),
                                             ("poly", 1e-2, True, "dynamic", True)]
    assert pre.schedule.reset_momentum is True
    assert (pre.schedule.decoder_warmup_epochs, pre.schedule.decoder_poly_epochs,
            pre.schedule.full_warmup_epochs, pre.epochs) == (25, 25, 50, 1000)
    # nulls stay null in the saved config, so a config switches arm with one override
    assert to_dict(pre)["schedule"]["name"] is None and to_dict(pre)["deep_supervision"] is None
    switched = apply_overrides(pre, ["baseline=dynamic"])
    assert (switched.schedule_name, switched.resolved_deep_supervision()) == ("poly", True)
    explicit = apply_overrides(dyn, ["deep_supervision=false", "lr=3e-3", "schedule.name=warmup"])
    assert (explicit.schedule_name, explicit.peak_lr(), explicit.resolved_deep_supervision()) == \
        ("warmup", 3e-3, False)
    with pytest.raises(ConfigError, match=r"baseline: 'scratch' is not one of \['none', 'fixed', 'dyn"):
        apply_overrides(pre, ["baseline=scratch"])
    with pytest.raises(ConfigError, match=r"unknown config key 'plans'; valid keys here: .*baseline"):
        apply_overrides(pre, ["plans=dynamic"])


def test_warmup_paper_default():
    s = sched("warmup")  # W = 50 of 1000
    assert s.lr_at(0) == pytest.approx(P / 50)
    assert s.lr_at(24) == pytest.approx(P * 25 / 50)
    assert s.lr_at(49) == pytest.approx(P)
    assert s.lr_at(50) == pytest.approx(P)  # poly starts at the peak
    assert s.lr_at(525) == pytest.approx(P * 0.5 ** 0.9)  # (1 - 475/950)
    assert s.lr_at(999) == pytest.approx(P * (1 / 950) ** 0.9)
    assert all(s.trainable(e) == ALL_UNET for e in (0, 49, 50, 999))


def test_warmup_zero_length_is_plain_poly():
    s = sched("warmup", epochs=10, warmup_epochs=0)
    assert s.lr_at(0) == pytest.approx(P)
    assert s.lr_at(5) == pytest.approx(P * 0.5 ** 0.9)


def test_sawtooth_phases():
    s = sched("sawtooth")  # 25 decoder warm-up, 25 decoder poly, 50 full warm-up, poly to 1000
    assert s.lr_at(0) == pytest.approx(P / 25)
    assert s.lr_at(24) == pytest.approx(P)
    assert s.lr_at(25) == pytest.approx(P)
    assert s.lr_at(30) == pytest.approx(P * (1 - 5 / 25) ** 0.9)
    assert s.lr_at(49) == pytest.approx(P * (1 / 25) ** 0.9)
    assert s.lr_at(50) == pytest.approx(P / 50)  # second warm-up restarts low
    assert s.lr_at(99) == pytest.approx(P)
    assert s.lr_at(100) == pytest.approx(P)
    assert s.lr_at(550) == pytest.approx(P * 0.5 ** 0.9)  # (1 - 450/900)
    for e in (0, 24, 25, 49):
        assert s.trainable(e) == DECODER
    for e in (50, 99, 100, 999):
        assert s.trainable(e) == ALL_UNET


def test_sawtooth_phases_match_the_reference_epochs():
    """nnssl fork's PretrainedTrainer_sawtooth: 0-24 decoder warm-up, 25-49 decoder poly, 50-99 whole-network
    warm-up, 100-999 poly. Its get_stage never reports the whole-network warm-up (50-99) with these lengths;
    here every epoch maps to its phase, which is what a resumed run relies on."""
    s = sched("sawtooth")
    expected = ["decoder_warmup"] * 25 + ["decoder_poly"] * 25 + ["full_warmup"] * 50 + ["full_poly"] * 900
    assert [s.phase(e) for e in range(1000)] == expected
    assert s.name == "sawtooth"
    # PretrainedTrainer_sawtooth_150ep: decoder 0-6 warm-up (15 // 2), 7-14 poly, whole net 15-29, 30-149
    short = sched("sawtooth", epochs=150, decoder_warmup_epochs=7, decoder_poly_epochs=8,
                  full_warmup_epochs=15)
    assert [short.phase(e) for e in (6, 7, 14, 15, 29, 30, 149)] == [
        "decoder_warmup", "decoder_poly", "decoder_poly", "full_warmup", "full_warmup", "full_poly",
        "full_poly"]


def test_lr_formulas_are_shared_with_pretraining():
    from mae3d.pretraining.config import OptimConfig
    from mae3d.pretraining.schedules import lr_at

    ft = sched("warmup", epochs=200, peak=1e-2, warmup_epochs=20)
    pt = OptimConfig(lr=1e-2, schedule="warmup-poly", warmup_epochs=20)
    assert [ft.lr_at(e) for e in range(200)] == [lr_at(pt, e, 200) for e in range(200)]
    assert [sched("poly", epochs=50, peak=1e-2).lr_at(e) for e in range(50)] == \
        [lr_at(OptimConfig(lr=1e-2), e, 50) for e in range(50)]


def test_sawtooth_custom_lengths():
    s = sched("sawtooth", epochs=6, peak=2.0, decoder_warmup_epochs=2, decoder_poly_epochs=1,
              full_warmup_epochs=2)
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([1.0, 2.0, 2.0, 1.0, 2.0, 2.0])
    assert [s.trainable(e) == ALL_UNET for e in range(6)] == [False, False, False, True, True, True]


def test_frozen_and_linear_probe():
    f = sched("frozen", epochs=100, warmup_epochs=10)
    assert f.lr_at(4) == pytest.approx(P / 2)
    assert f.lr_at(55) == pytest.approx(P * 0.5 ** 0.9)
    assert f.trainable(0) == f.trainable(99) == DECODER
    lp = sched("linear-probe", epochs=100, warmup_epochs=10)
    assert lp.head == "linear_probe"
    assert lp.trainable(50) == frozenset({"probe"})
    assert lp.lr_at(9) == pytest.approx(P)


def test_poly_and_constant():
    p = sched("poly", epochs=100, peak=1e-2)
    assert p.lr_at(0) == pytest.approx(1e-2)
    assert p.lr_at(50) == pytest.approx(1e-2 * 0.5 ** 0.9)
    c = sched("none", epochs=100)
    assert c.lr_at(0) == c.lr_at(99) == P
    assert c.trainable(3) == ALL_UNET


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ConfigError, match=r"valid: .*sawtooth"):
        apply_overrides(FinetuneConfig(), ["schedule.name=cosine"])


def test_config_defaults_and_validation():
    cfg = FinetuneConfig()
    assert (cfg.epochs, cfg.iterations_per_epoch, cfg.batch_size) == (1000, 250, None)
    assert cfg.resolved_deep_supervision() is False
    assert cfg.peak_lr() == 1e-3 and apply_overrides(cfg, ["baseline=fixed"]).peak_lr() == 1e-2
    assert apply_overrides(cfg, ["lr=3e-4"]).peak_lr() == 3e-4
    assert apply_overrides(cfg, ["fold=all"]).fold == "all"
    assert FinetuneConfig(fold="3").fold == 3
    with pytest.raises(ConfigError, match="fold"):
        FinetuneConfig(fold="last")
    with pytest.raises(ConfigError, match="freezes the encoder, which needs pre-trained weights"):
        apply_overrides(cfg, ["baseline=dynamic", "schedule.name=sawtooth"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        apply_overrides(cfg, ["schedule.warmup_epochs=-1"])


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("gpu")


def test_seed_must_fit_numpy():
    assert FinetuneConfig(seed=0).seed == 0
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*32\), got -1"):
        FinetuneConfig(seed=-1)
