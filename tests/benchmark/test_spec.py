"""Benchmark spec validation: valid specs load, malformed ones fail with one clear line naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from mae3d.benchmark.spec import SpecError, load_spec, validate

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "benchmarks" / "specs"


def _err(data, match: str, **kw) -> str:
    with pytest.raises(SpecError, match=match) as info:
        validate(data, check_paths=kw.pop("check_paths", False), **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_spec_resolves_paths_against_the_spec_file(tmp_path, make_spec, brain_raw):
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "pre.pth").write_bytes(b"x")
    data = make_spec(brain_raw)
    data["methods"][0]["checkpoint"] = "ckpts/pre.pth"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    assert spec.method("pre").checkpoint == tmp_path / "ckpts" / "pre.pth"
    assert spec.source == path.resolve()
    assert spec.reference == "scratch"  # default: the first fixed baseline
    assert spec.folds(spec.dataset("brain")) == (0,)
    assert "epochs=1" in spec.budget and 'schedule.name="warmup"' in spec.budget
    # JSON works as well, and the dict form round-trips
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    again = load_spec(tmp_path / "spec.json")
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d["methods"].append({"name": "weird"}), r"methods\[2\] 'weird': unknown method kind"),
    (lambda d: d["methods"][1].update(plans_from="nope"),
     r"methods\[1\] 'scratch'\.plans_from: unknown method 'nope'; valid: pre"),
    (lambda d: d["methods"][1].update(baseline="medium"),
     r"methods\[1\] 'scratch'\.baseline: 'medium' is not one of fixed, dynamic"),
    (lambda d: d.update(reference="ghost"), r"reference: unknown method 'ghost'"),
    (lambda d: d["methods"].append({"name": "pre", "baseline": "dynamic"}),
     r"methods: name 'pre' is used twice"),
    (lambda d: d["methods"][0].update(finetune={"fold": 3}), r"fold is set by the runner"),
    (lambda d: d["budget"].update(seed=3), r"seed is set by the runner per cell \(.*seed from seeds"),
    (lambda d: d["budget"].update(epoch=3), r"unknown config key 'epoch'"),
    (lambda d: d["datasets"][0].update(role="train"),
     r"datasets\[0\] 'brain'\.role: 'train' is not one of dev, test"),
    (lambda d: d["datasets"][0].update(split="random"),
     r"datasets\[0\] 'brain'\.split\.kind: 'random' is not one of kfold, fixed"),
    (lambda d: d["datasets"][0].update(split={"kind": "kfold", "folds": [0, 5]}),
     r"split\.folds: fold 5 is out of range 0\.\.4"),
    (lambda d: d["datasets"][0].update(split={"kind": "fixed", "train": ["a", "b"], "test": ["b"]}),
     r"split: case 'b' is in both train and test"),
    (lambda d: d["datasets"][0].update(split={"kind": "kfold", "test": ["a"]}),
     r"split\.test: a kfold split"),
    (lambda d: d["datasets"][0].update(embedded="lungs"), r"embedded: unknown embedded dataset 'lungs'"),
    (lambda d: d.update(schema_version=2), r"schema_version: 2 is not supported"),
    (lambda d: d.update(seeds=[0, 0]), r"seeds: a seed is listed twice"),
    (lambda d: d.update(colour="red"), r"spec: unknown field 'colour'"),
])
def test_malformed_specs_name_the_field(make_spec, change, match):
    data = copy.deepcopy(make_spec())
    change(data)
    _err(data, match)


def test_pretrain_recipes_are_checked(make_spec):
    data = make_spec()
    data["methods"][0] = {"name": "pre", "pretrain": {"corpus": "embedded", "set": {"method.name": "s4d"}}}
    _err(data, r"pretrain\.corpus: unknown corpus 'embedded'")
    data["corpora"] = {"embedded": {"embedded": True, "exclude": ["robex_t1"]}}
    _err(data, r"pretrain\.set: unknown pre-training method 's4d'; valid: mae, s3d")
    data["methods"][0]["pretrain"]["set"] = {"method.name": "mae", "optim.lrr": 1}
    _err(data, r"pretrain\.set: unknown config key 'optim\.lrr'")
    data["methods"][0]["pretrain"]["set"] = {"method": {"name": "mae"}, "model.name": "resenc-xs"}
    spec = validate(data, check_paths=False)
    assert spec.method("pre").pretrain.overrides == ('method.name="mae"', 'model.name="resenc-xs"')
    data["corpora"]["embedded"]["exclude"] = ["nothing_like_this"]
    _err(data, r"corpora\.embedded\.exclude\[0\]: 'nothing_like_this' is not an image of the embedded corpus")


def test_dynamic_baseline_cannot_take_a_pretrained_schedule(make_spec):
    data = make_spec()
    data["methods"].append({"name": "dyn", "baseline": "dynamic", "finetune": {"schedule.name": "sawtooth"}})
    _err(data, r"methods\[2\] 'dyn'\.finetune \(with budget\): .*needs pre-trained weights")


def test_missing_dataset_folder_and_cases(tmp_path, make_spec, brain_raw, six_case_raw):
    (tmp_path / "ckpt.pth").write_bytes(b"x")
    data = make_spec(tmp_path / "Dataset999_Nowhere")
    _err(data, r"datasets 'brain'\.path: dataset folder .*Dataset999_Nowhere not found", check_paths=True,
         base_dir=tmp_path)
    data = make_spec(brain_raw)
    data["datasets"][0]["split"] = {"kind": "fixed", "test": ["ghost_case"]}
    _err(data, r"datasets 'brain'\.split\.test: case 'ghost_case' not found", check_paths=True,
         base_dir=tmp_path)
    data["datasets"][0]["split"] = "kfold"
    _err(data, r"5-fold cross-validation needs >= 5 training cases, .* has 2", check_paths=True,
         base_dir=tmp_path)
    data = make_spec(six_case_raw)
    data["datasets"][0]["split"] = "kfold"
    spec = validate(data, check_paths=True, base_dir=tmp_path)
    assert spec.folds(spec.dataset("brain")) == (0, 1, 2, 3, 4)
    data["methods"][0]["checkpoint"] = "missing.pth"
    _err(data, r"methods 'pre'\.checkpoint: .*missing\.pth not found", check_paths=True, base_dir=tmp_path)


def test_unreadable_spec_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_spec(bad)
    with pytest.raises(FileNotFoundError, match="benchmark spec not found"):
        load_spec(tmp_path / "nope.yaml")


def test_paper_spec_is_valid_without_the_data():
    spec = load_spec(SPECS / "paper.yaml", check_paths=False)
    assert [d.name for d in spec.datasets][:3] == ["D1_MS_FLAIR", "D2_BrainMets", "D3_Hippocampus"]
    assert len(spec.datasets) == 13
    assert sum(d.role == "dev" for d in spec.datasets) == 5
    assert {m.name for m in spec.methods} == {"S3D", "MAE", "scratch-fixed", "scratch-dynamic"}
    assert spec.reference == "scratch-fixed"
    assert "epochs=1000" in spec.budget and "iterations_per_epoch=250" in spec.budget
    assert spec.method("scratch-dynamic").baseline == "dynamic"


def test_cpu_real_spec_is_valid_here():
    """The CPU benchmark: tasks with >= 2 held-out cases each (cross-validation), >= 3 seeds, S3D / MAE /
    scratch with fixed plans, pre-training that keeps a held-out volume for its validation curve."""
    from mae3d.data import DATASETS

    spec = load_spec(SPECS / "cpu_real.yaml", check_paths=True)
    assert {d.embedded for d in spec.datasets} == {"heads", "tissue"}
    assert len(spec.seeds) >= 3
    for ds in spec.datasets:
        assert ds.split.kind == "kfold" and len(spec.folds(ds)) >= 2
        # every fold holds out one embedded image: n_splits = the dataset's images
        assert ds.split.n_splits == len(DATASETS.get(ds.embedded).held_out)
    assert [m.name for m in spec.methods] == ["S3D", "MAE", "scratch-fixed"]
    assert spec.method("scratch-fixed").plans_from == "S3D" and spec.reference == "scratch-fixed"
    for m in ("S3D", "MAE"):
        assert "loader.val_fraction=0.15" in spec.method(m).pretrain.overrides
