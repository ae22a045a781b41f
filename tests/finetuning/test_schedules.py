"""Learning rates and trainable groups of each schedule at chosen epochs, computed by hand."""

from __future__ import annotations

import pytest

from mae3d.config import ConfigError, apply_overrides
from mae3d.finetuning import FinetuneConfig, ScheduleConfig, make_schedule
from mae3d.finetuning.config import resolve_device
from mae3d.finetuning.schedules import ALL_UNET, SCHEDULES

P = 1e-3
DECODER = frozenset({"decoder", "in_proj"})


def sched(name: str, epochs: int = 1000, peak: float = P, **kw):
    return make_schedule(ScheduleConfig(name=name, **kw), epochs=epochs, peak_lr=peak)


def test_registry_has_the_documented_schedules():
    assert set(SCHEDULES.names()) == {"warmup", "sawtooth", "frozen", "linear-probe", "poly", "none"}


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
    assert cfg.deep_supervision is False
    assert cfg.peak_lr(pretrained=True) == 1e-3 and cfg.peak_lr(pretrained=False) == 1e-2
    assert apply_overrides(cfg, ["lr=3e-4"]).peak_lr(pretrained=True) == 3e-4
    assert apply_overrides(cfg, ["fold=all"]).fold == "all"
    assert FinetuneConfig(fold="3").fold == 3
    with pytest.raises(ConfigError, match="fold"):
        FinetuneConfig(fold="last")
    with pytest.raises(ConfigError, match="needs pre-trained weights"):
        apply_overrides(cfg, ["plans=dynamic", "schedule.name=sawtooth"])
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
