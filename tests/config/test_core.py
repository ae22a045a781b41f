from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mae3d.config import ConfigError, apply_overrides, from_dict, load_config, to_dict, write_run_config
from mae3d.io.atomic import read_json


@dataclass
class Optim:
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True


@dataclass
class Run:
    name: str = "run"
    epochs: int = 1000
    patch_size: tuple[int, int, int] = (160, 160, 160)
    ratio: float | tuple[float, float] = 0.75
    method: Literal["mae", "s3d"] = "s3d"
    optim: Optim = field(default_factory=Optim)


def test_defaults_round_trip():
    cfg = Run()
    assert from_dict(Run, to_dict(cfg)) == cfg


def test_overrides_are_typed():
    cfg = apply_overrides(Run(), ["optim.lr=1e-3", "epochs=5", "patch_size=[64, 64, 64]",
                                  "ratio=[0.6, 0.9]", "optim.nesterov=false", "method=mae"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 5 and cfg.patch_size == (64, 64, 64)
    assert cfg.ratio == (0.6, 0.9) and cfg.optim.nesterov is False and cfg.method == "mae"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'; valid keys here: optim.lr"),
        ("optimizer.lr=1", "unknown config key 'optimizer'"),
        ("epochs=abc", "epochs: expected an integer"),
        ("method=vae", "method: 'vae' is not one of"),
        ("patch_size=[1, 2]", "patch_size: expected 3 values"),
        ("epochs", "not of the form"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_overrides(Run(), [override])


def test_yaml_values_are_never_executed():
    cfg = apply_overrides(Run(), ["name=!!python/object/apply:os.system ['echo hacked']"])
    assert cfg.name.startswith("!!python")  # kept as an inert string


def test_load_config_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 10\noptim:\n  lr: 0.5\n")
    cfg = load_config(Run, f, ["optim.lr=0.25"])
    assert cfg.epochs == 10 and cfg.optim.lr == 0.25 and cfg.optim.momentum == 0.99
    f.write_text("epochs: 10\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        load_config(Run, f)


def test_run_config_has_provenance_and_reloads(tmp_path):
    cfg = apply_overrides(Run(), ["epochs=3"])
    path = write_run_config(tmp_path, cfg, command=["mae3d", "pretrain", "x"])
    data = read_json(path)
    assert data["config"]["epochs"] == 3
    prov = data["provenance"]
    assert prov["command"] == ["mae3d", "pretrain", "x"]
    assert prov["versions"]["torch"] and prov["date"]
    assert "git_commit" in prov
    assert load_config(Run, path) == cfg  # a run folder's config.json is a valid config file


@dataclass
class WithOptions:
    name: str = "s3d"
    options: dict[str, object] = field(default_factory=dict)


def test_free_mapping_accepts_new_keys():
    cfg = apply_overrides(WithOptions(), ["options.sparse_conv=false", "options.nested.depth=2"])
    assert cfg.options == {"sparse_conv": False, "nested": {"depth": 2}}
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        apply_overrides(WithOptions(), ["name.x=1"])
