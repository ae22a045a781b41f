"""Benchmark specs: a YAML/JSON file naming datasets, methods, budgets and seeds, validated into dataclasses.

A spec describes a grid of cells (method x dataset x fold x seed); :mod:`mae3d.benchmark.runner` runs
each cell through fine-tune -> predict -> evaluate. Layout (``schema_version: 1``)::

    schema_version: 1
    name: cpu_real
    seeds: [0, 1]
    budget: {epochs: 1000, iterations_per_epoch: 250}       # FinetuneConfig overrides, every cell
    evaluation: {mirroring: false, tolerance_mm: 1.0}       # prediction / metric options
    corpora:                                                # pre-training corpora (for pretrain recipes)
      embedded: {embedded: true, exclude: [robex_t1], prepare: {target_spacing: [2, 2, 2]}}
    datasets:
      - {name: D1, role: dev, path: /data/nnUNet_raw/Dataset101_X, split: kfold}
      - {name: brain, role: test, embedded: brainextraction, spacing: 2.0, split: fixed}
    methods:
      - {name: S3D, pretrain: {corpus: embedded, set: {model.name: resenc-xs}}}
      - {name: MAE, checkpoint: ckpts/mae.pth, finetune: {schedule.name: sawtooth}}
      - {name: scratch-fixed, baseline: fixed, plans_from: S3D}
      - {name: scratch-dynamic, baseline: dynamic}
    reference: scratch-fixed                                # deltas / significance against this

Relative paths resolve against the spec file's folder. Every problem raises :class:`SpecError` with one
line naming the field (``datasets[1] 'brain'.split.kind: ...``). ``validate(data, check_paths=False)``
checks the structure only (for specs of data that is not on this machine, e.g. the paper's).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mae3d.benchmark.raw_cases import list_cases
from mae3d.config import ConfigError, apply_overrides
from mae3d.config.core import plain

__all__ = [
    "RUNNER_KEYS",
    "SCHEMA_VERSION",
    "BenchmarkSpec",
    "CorpusEntry",
    "DatasetEntry",
    "EvaluationOptions",
    "MethodEntry",
    "PretrainRecipe",
    "SpecError",
    "SplitSpec",
    "finetune_config",
    "flatten_overrides",
    "load_spec",
    "validate",
]

SCHEMA_VERSION = 1
ROLES = ("dev", "test")
SPLIT_KINDS = ("kfold", "fixed")
BASELINES = ("fixed", "dynamic")
#: FinetuneConfig fields the runner sets per cell; a spec may not override them
RUNNER_KEYS = ("fold", "baseline", "seed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SpecError(ConfigError):
    """The benchmark spec is malformed; the one-line message names the field."""


@dataclass(frozen=True)
class SplitSpec:
    """How a dataset's cases are split into training and test cases.

    ``kfold``: nnU-Net's seeded ``n_splits``-fold cross-validation of ``imagesTr`` (test = the fold's
    held-out cases); ``fixed``: one split, ``train`` ids from ``imagesTr`` and ``test`` ids from
    ``imagesTs``/``labelsTs`` (or ``imagesTr``, then excluded from training). Without lists a fixed split
    reads the dataset's ``splits.json``, else trains on all of ``imagesTr`` and tests on all of ``imagesTs``.
    """

    kind: Literal["kfold", "fixed"] = "fixed"
    folds: tuple[int, ...] = ()
    n_splits: int = 5
    train: tuple[str, ...] | None = None
    test: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetEntry:
    """One downstream dataset: an nnU-Net raw folder (``path``) or an embedded one built on demand."""

    name: str
    role: Literal["dev", "test"]
    split: SplitSpec
    path: Path | None = None
    embedded: str | None = None  # key of mae3d.data.DATASETS
    spacing: float | None = None  # embedded: resample so that no axis is finer (mm)
    max_train_cases: int | None = None
    subset_seed: int = 0  # which training cases a max_train_cases subset keeps
    source: str = ""  # public name / URL / notes (free text)


@dataclass(frozen=True)
class CorpusEntry:
    """A pre-training corpus: the embedded real volumes, a manifest, or an already prepared folder."""

    name: str
    embedded: bool = False
    exclude: tuple[str, ...] = ()  # embedded source names left out (e.g. downstream test images)
    manifest: Path | None = None
    prepared: Path | None = None
    prepare: tuple[str, ...] = ()  # PrepareConfig overrides ("key=value")


@dataclass(frozen=True)
class PretrainRecipe:
    """Pre-train once (cached in ``OUT/pretrain/<method>``) on ``corpus`` with PretrainConfig overrides."""

    corpus: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodEntry:
    """A pre-trained checkpoint (file or recipe) or a from-scratch baseline, plus fine-tuning overrides."""

    name: str
    checkpoint: Path | None = None
    pretrain: PretrainRecipe | None = None
    baseline: Literal["fixed", "dynamic"] | None = None
    plans_from: str | None = None  # fixed baseline: method whose checkpoint defines the plans
    finetune: tuple[str, ...] = ()  # FinetuneConfig overrides after the budget
    description: str = ""

    @property
    def pretrained(self) -> bool:
        """True for methods that load pre-trained weights."""
        return self.baseline is None


@dataclass(frozen=True)
class EvaluationOptions:
    """How test cases are predicted and scored."""

    mirroring: bool = False  # test-time mirroring (nnU-Net's default is on; 8x the compute in 3-D)
    tile_step_size: float = 0.5
    tolerance_mm: float = 1.0  # NSD tolerance
    bootstrap: int = 10000  # bootstrap resamples of the paired mean difference
    report_seed: int = 0  # seed of the bootstrap


@dataclass(frozen=True)
class BenchmarkSpec:
    """A validated benchmark spec (see the module docstring for the file format)."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    methods: tuple[MethodEntry, ...]
    seeds: tuple[int, ...] = (0,)
    budget: tuple[str, ...] = ()
    corpora: dict[str, CorpusEntry] = field(default_factory=dict)
    reference: str | None = None
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    source: Path | None = None  # the spec file (None: built in memory)

    def method(self, name: str) -> MethodEntry:
        """The method called ``name`` (SpecError listing the valid ones otherwise)."""
        for m in self.methods:
            if m.name == name:
                return m
        raise SpecError(f"unknown method {name!r}; valid: {', '.join(m.name for m in self.methods)}")

    def dataset(self, name: str) -> DatasetEntry:
        """The dataset called ``name`` (SpecError listing the valid ones otherwise)."""
        for d in self.datasets:
            if d.name == name:
                return d
        raise SpecError(f"unknown dataset {name!r}; valid: {', '.join(d.name for d in self.datasets)}")

    def folds(self, dataset: DatasetEntry) -> tuple[int, ...]:
        """Fold indices run for ``dataset`` (a fixed split is fold 0)."""
        return dataset.split.folds if dataset.split.kind == "kfold" else (0,)

    def to_dict(self) -> dict[str, Any]:
        """The spec in its file format (paths absolute); :func:`validate` reads it back unchanged."""
        def split(sp: SplitSpec) -> dict[str, Any]:
            if sp.kind == "kfold":
                return {"kind": "kfold", "folds": list(sp.folds), "n_splits": sp.n_splits}
            return {"kind": "fixed", **{k: list(v) for k, v in (("train", sp.train), ("test", sp.test)) if v}}

        def dataset(d: DatasetEntry) -> dict[str, Any]:
            out: dict[str, Any] = {"name": d.name, "role": d.role, "split": split(d.split)}
            if d.path is not None:
                out["path"] = str(d.path)
            else:
                out |= {"embedded": d.embedded, "spacing": d.spacing}
            if d.max_train_cases is not None:
                out |= {"max_train_cases": d.max_train_cases, "subset_seed": d.subset_seed}
            return out | ({"source": d.source} if d.source else {})

        def corpus(c: CorpusEntry) -> dict[str, Any]:
            if c.prepared is not None:
                return {"prepared": str(c.prepared)}
            out: dict[str, Any] = {"manifest": str(c.manifest)} if c.manifest is not None else {
                "embedded": True, "exclude": list(c.exclude)}
            return out | {"prepare": list(c.prepare)}

        def method(m: MethodEntry) -> dict[str, Any]:
            out: dict[str, Any] = {"name": m.name}
            if m.checkpoint is not None:
                out["checkpoint"] = str(m.checkpoint)
            elif m.pretrain is not None:
                out["pretrain"] = {"corpus": m.pretrain.corpus, "set": list(m.pretrain.overrides)}
            else:
                out["baseline"] = m.baseline
                if m.plans_from is not None:
                    out["plans_from"] = m.plans_from
            out["finetune"] = list(m.finetune)
            return out | ({"description": m.description} if m.description else {})

        return {"schema_version": self.schema_version, "name": self.name, "description": self.description,
                "seeds": list(self.seeds), "device": self.device, "budget": list(self.budget),
                "evaluation": dataclasses.asdict(self.evaluation),
                "corpora": {k: corpus(c) for k, c in self.corpora.items()},
                "datasets": [dataset(d) for d in self.datasets], "methods": [method(m) for m in self.methods],
                "reference": self.reference}


# ------------------------------------------------------------------------------------------ helpers
def flatten_overrides(value: Any, where: str) -> tuple[str, ...]:
    """Overrides given as a (nested or dotted) mapping or a list of ``key=value`` strings -> strings.

    Values are written as JSON, which the config loader parses as YAML (strings stay strings).
    """
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise SpecError(f"{where}[{i}]: expected 'key=value', got {item!r}")
            out.append(item)
        return tuple(out)
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected a mapping of config keys or a list of 'key=value', got {value!r}")
    out = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping) and v:
                walk(v, key + ".")
            else:
                out.append(f"{key}={json.dumps(plain(v))}")

    walk(value, "")
    return tuple(out)


def _keys_of(overrides: Sequence[str]) -> list[str]:
    return [o.split("=", 1)[0].strip() for o in overrides]


def _check_overrides(cls: type, overrides: Sequence[str], where: str) -> Any:
    try:
        return apply_overrides(cls(), overrides)
    except (ConfigError, ValueError, TypeError) as e:
        raise SpecError(f"{where}: {e}") from None


def _take(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}; valid: {', '.join(allowed)}")
    return dict(data)


def _str(value: Any, where: str, *, name: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
    if name and not _NAME.match(value):
        raise SpecError(f"{where}: {value!r} is not a valid name (letters, digits, '.', '_', '+', '-'; used "
                        "in folder names)")
    return value


def _int(value: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _choice(value: Any, choices: Sequence[str], where: str) -> str:
    if value not in choices:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _path(value: Any, base: Path, where: str) -> Path:
    text = _str(value, where)
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _unique(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SpecError(f"{where}: name {n!r} is used twice")
        seen.add(n)


# ------------------------------------------------------------------------------------------ sections
def _split(value: Any, where: str) -> SplitSpec:
    if isinstance(value, str):
        value = {"kind": value}
    d = _take(value if value is not None else {"kind": "fixed"},
              ("kind", "folds", "n_splits", "train", "test"), where)
    kind = _choice(d.get("kind", "fixed"), SPLIT_KINDS, f"{where}.kind")
    if kind == "kfold":
        for key in ("train", "test"):
            if key in d:
                raise SpecError(f"{where}.{key}: a kfold split takes its test cases from the folds; use "
                                "kind: fixed for explicit lists")
        n = _int(d.get("n_splits", 5), f"{where}.n_splits", minimum=2)
        folds_raw = d.get("folds", list(range(n)))
        if not isinstance(folds_raw, list) or not folds_raw:
            raise SpecError(f"{where}.folds: expected a non-empty list of fold indices, got {folds_raw!r}")
        folds = tuple(_int(f, f"{where}.folds[{i}]") for i, f in enumerate(folds_raw))
        bad = [f for f in folds if not 0 <= f < n]
        if bad:
            raise SpecError(f"{where}.folds: fold {bad[0]} is out of range 0..{n - 1} (n_splits={n})")
        if len(set(folds)) != len(folds):
            raise SpecError(f"{where}.folds: a fold is listed twice: {list(folds)}")
        return SplitSpec(kind="kfold", folds=folds, n_splits=n)
    for key in ("folds", "n_splits"):
        if key in d:
            raise SpecError(f"{where}.{key}: only kfold splits have folds")
    lists: dict[str, tuple[str, ...] | None] = {}
    for key in ("train", "test"):
        raw = d.get(key)
        if raw is None:
            lists[key] = None
            continue
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{where}.{key}: expected a non-empty list of case ids, got {raw!r}")
        lists[key] = tuple(_str(c, f"{where}.{key}[{i}]") for i, c in enumerate(raw))
    if lists["train"] and lists["test"]:
        overlap = sorted(set(lists["train"]) & set(lists["test"]))
        if overlap:
            raise SpecError(f"{where}: case {overlap[0]!r} is in both train and test")
    return SplitSpec(kind="fixed", train=lists["train"], test=lists["test"])


def _dataset(value: Any, i: int, base: Path) -> DatasetEntry:
    where = f"datasets[{i}]"
    d = _take(value, ("name", "role", "path", "embedded", "spacing", "split", "max_train_cases",
                      "subset_seed", "source"), where)
    name = _str(d.get("name"), f"{where}.name", name=True)
    where = f"datasets[{i}] {name!r}"
    if "role" not in d:
        raise SpecError(f"{where}.role: missing (dev or test)")
    role = _choice(d["role"], ROLES, f"{where}.role")
    path = embedded = spacing = None
    if ("path" in d) == ("embedded" in d):
        raise SpecError(f"{where}: give exactly one of path (an nnU-Net raw dataset folder) or embedded "
                        "(a key of mae3d.data.DATASETS: brainextraction, cerebra, heads, tissue, tumour)")
    if "path" in d:
        path = _path(d["path"], base, f"{where}.path")
        if "spacing" in d:
            raise SpecError(f"{where}.spacing: only embedded datasets are resampled by the benchmark")
    else:
        from mae3d.data import DATASETS

        embedded = _str(d["embedded"], f"{where}.embedded")
        if embedded not in DATASETS:
            raise SpecError(f"{where}.embedded: unknown embedded dataset {embedded!r}; valid: "
                            f"{', '.join(DATASETS.names())}")
        if d.get("spacing") is not None:
            value = d["spacing"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise SpecError(f"{where}.spacing: expected a positive number of mm, got {d['spacing']!r}")
            spacing = float(d["spacing"])
    split = _split(d.get("split"), f"{where}.split")
    max_train = d.get("max_train_cases")
    if max_train is not None:
        max_train = _int(max_train, f"{where}.max_train_cases", minimum=1)
    source = d.get("source", "")
    if not isinstance(source, str):
        raise SpecError(f"{where}.source: expected text, got {source!r}")
    return DatasetEntry(name=name, role=role, split=split, path=path, embedded=embedded, spacing=spacing,  # type: ignore[arg-type]
                        max_train_cases=max_train,
                        subset_seed=_int(d.get("subset_seed", 0), f"{where}.subset_seed"), source=source)


def _corpus(name: str, value: Any, base: Path) -> CorpusEntry:
    where = f"corpora.{name}"
    _str(name, where, name=True)
    d = _take(value, ("embedded", "exclude", "manifest", "prepared", "prepare"), where)
    given = [k for k in ("embedded", "manifest", "prepared") if d.get(k) not in (None, False)]
    if len(given) != 1:
        raise SpecError(f"{where}: give exactly one of embedded: true, manifest (a corpus manifest.json) or "
                        "prepared (a folder written by mae3d prepare)")
    exclude = d.get("exclude") or []
    if not isinstance(exclude, list):
        raise SpecError(f"{where}.exclude: expected a list of embedded source names, got {exclude!r}")
    if exclude and given[0] != "embedded":
        raise SpecError(f"{where}.exclude: only the embedded corpus can exclude images")
    if exclude:
        from mae3d.data.corpus import CORPUS_IMAGES

        images = [c.image for c in CORPUS_IMAGES]
        for j, src in enumerate(exclude):
            if src not in images:
                raise SpecError(f"{where}.exclude[{j}]: {src!r} is not an image of the embedded corpus; "
                                f"valid: {', '.join(images)}")
    prepare = flatten_overrides(d.get("prepare"), f"{where}.prepare")
    if prepare and given[0] == "prepared":
        raise SpecError(f"{where}.prepare: a prepared corpus is used as it is")
    if prepare:
        from mae3d.preprocessing.config import PrepareConfig

        _check_overrides(PrepareConfig, prepare, f"{where}.prepare")
    return CorpusEntry(
        name=name, embedded=given[0] == "embedded", exclude=tuple(exclude),
        manifest=_path(d["manifest"], base, f"{where}.manifest") if given[0] == "manifest" else None,
        prepared=_path(d["prepared"], base, f"{where}.prepared") if given[0] == "prepared" else None,
        prepare=prepare)


def _pretrain_recipe(value: Any, where: str, corpora: Mapping[str, CorpusEntry]) -> PretrainRecipe:
    from mae3d.models import ARCHITECTURES
    from mae3d.pretraining.config import PretrainConfig
    from mae3d.pretraining.methods import METHODS

    d = _take(value, ("corpus", "set"), where)
    corpus = _str(d.get("corpus"), f"{where}.corpus")
    if corpus not in corpora:
        raise SpecError(f"{where}.corpus: unknown corpus {corpus!r}; defined corpora: "
                        f"{', '.join(corpora) or '(none: add a corpora section)'}")
    overrides = flatten_overrides(d.get("set"), f"{where}.set")
    if "data.corpus" in _keys_of(overrides):
        raise SpecError(f"{where}.set: data.corpus is set by the benchmark from {where}.corpus")
    cfg = _check_overrides(PretrainConfig, overrides, f"{where}.set")
    if cfg.method.name not in METHODS:
        raise SpecError(f"{where}.set: unknown pre-training method {cfg.method.name!r}; valid: "
                        f"{', '.join(METHODS.names())}")
    if cfg.model.name not in ARCHITECTURES:
        raise SpecError(f"{where}.set: unknown architecture {cfg.model.name!r}; valid: "
                        f"{', '.join(ARCHITECTURES.names())}")
    return PretrainRecipe(corpus=corpus, overrides=overrides)


def _method(value: Any, i: int, base: Path, corpora: Mapping[str, CorpusEntry]) -> MethodEntry:
    where = f"methods[{i}]"
    d = _take(value, ("name", "checkpoint", "pretrain", "baseline", "plans_from", "finetune", "description"),
              where)
    name = _str(d.get("name"), f"{where}.name", name=True)
    where = f"methods[{i}] {name!r}"
    kinds = [k for k in ("checkpoint", "pretrain", "baseline") if d.get(k) is not None]
    if len(kinds) != 1:
        raise SpecError(f"{where}: unknown method kind: give exactly one of checkpoint (a pre-trained file), "
                        "pretrain (a recipe run once) or baseline (fixed | dynamic, from scratch)")
    checkpoint = recipe = baseline = None
    if kinds[0] == "checkpoint":
        checkpoint = _path(d["checkpoint"], base, f"{where}.checkpoint")
    elif kinds[0] == "pretrain":
        recipe = _pretrain_recipe(d["pretrain"], f"{where}.pretrain", corpora)
    else:
        baseline = _choice(d["baseline"], BASELINES, f"{where}.baseline")
    plans_from = d.get("plans_from")
    if baseline == "fixed":
        plans_from = _str(plans_from,
                          f"{where}.plans_from (the method whose checkpoint defines the fixed plans)")
    elif plans_from is not None:
        raise SpecError(f"{where}.plans_from: only a fixed baseline borrows another method's plans")
    finetune = flatten_overrides(d.get("finetune"), f"{where}.finetune")
    description = d.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{where}.description: expected text, got {description!r}")
    return MethodEntry(name=name, checkpoint=checkpoint, pretrain=recipe, baseline=baseline,  # type: ignore[arg-type]
                       plans_from=plans_from, finetune=finetune, description=description)


def _finetune_config(spec_budget: Sequence[str], method: MethodEntry, where: str) -> Any:
    from mae3d.finetuning import FinetuneConfig

    overrides = [*spec_budget, *method.finetune]
    for key in _keys_of(overrides):
        if key.split(".")[0] in RUNNER_KEYS:
            raise SpecError(f"{where}: {key} is set by the runner per cell (fold from the split, seed from "
                            "seeds, baseline from the method kind)")
    arm = [f"baseline={method.baseline}"] if method.baseline is not None else []
    return _check_overrides(FinetuneConfig, [*arm, *overrides], where)


def _evaluation(value: Any) -> EvaluationOptions:
    d = _take(value or {}, [f.name for f in dataclasses.fields(EvaluationOptions)], "evaluation")
    try:
        from mae3d.config import from_dict

        opts = from_dict(EvaluationOptions, d, prefix="evaluation.")
    except ConfigError as e:
        raise SpecError(str(e)) from None
    if not 0 < opts.tile_step_size <= 1:
        raise SpecError(f"evaluation.tile_step_size: must be in (0, 1], got {opts.tile_step_size}")
    if opts.tolerance_mm < 0:
        raise SpecError(f"evaluation.tolerance_mm: must be >= 0, got {opts.tolerance_mm}")
    if opts.bootstrap < 100:
        raise SpecError(f"evaluation.bootstrap: at least 100 resamples, got {opts.bootstrap}")
    return opts


# ------------------------------------------------------------------------------------------ paths
def _check_dataset_paths(ds: DatasetEntry) -> None:
    where = f"datasets {ds.name!r}.path"
    assert ds.path is not None
    if not ds.path.is_dir():
        raise SpecError(f"{where}: dataset folder {ds.path} not found")
    for sub in ("dataset.json", "imagesTr", "labelsTr"):
        if not (ds.path / sub).exists():
            raise SpecError(f"{where}: {ds.path / sub} missing (not an nnU-Net raw dataset)")
    train = list_cases(ds.path, "Tr")
    if ds.split.kind == "kfold":
        if len(train) < ds.split.n_splits:
            raise SpecError(f"datasets {ds.name!r}.split: {ds.split.n_splits}-fold cross-validation needs >= "
                            f"{ds.split.n_splits} training cases, {ds.path} has {len(train)}")
        return
    test_ts = list_cases(ds.path, "Ts")
    if ds.split.train is None and ds.split.test is None and not (ds.path / "splits.json").is_file() \
            and not test_ts:
        raise SpecError(f"datasets {ds.name!r}.split: fixed split without train/test lists, "
                        f"{ds.path}/splits.json or imagesTs+labelsTs: no test cases")
    for key, ids in (("train", ds.split.train), ("test", ds.split.test)):
        for case in ids or ():
            if case not in train and not (key == "test" and case in test_ts):
                where = "imagesTr/labelsTr" if key == "train" else "imagesTs/labelsTs or imagesTr"
                raise SpecError(f"datasets {ds.name!r}.split.{key}: case {case!r} not found in {ds.path} "
                                f"({where})")


def _check_paths(spec: BenchmarkSpec) -> None:
    for ds in spec.datasets:
        if ds.path is not None:
            _check_dataset_paths(ds)
    for m in spec.methods:
        if m.checkpoint is not None and not m.checkpoint.exists():
            raise SpecError(f"methods {m.name!r}.checkpoint: {m.checkpoint} not found")
    for c in spec.corpora.values():
        for key in ("manifest", "prepared"):
            p = getattr(c, key)
            if p is not None and not p.exists():
                raise SpecError(f"corpora.{c.name}.{key}: {p} not found")


# ------------------------------------------------------------------------------------------ entry points
def validate(data: Mapping[str, Any], *, check_paths: bool = True, base_dir: str | Path | None = None,
             source: Path | None = None) -> BenchmarkSpec:
    """Validate a spec mapping into a :class:`BenchmarkSpec`.

    Args:
        data: the parsed YAML/JSON.
        check_paths: also check that dataset folders (with their split's cases), checkpoints and corpora
            exist; off for specs of data that is not on this machine.
        base_dir: folder relative paths resolve against (default: the current folder).
        source: the spec file, recorded in the result.

    Raises:
        SpecError: the first problem found, naming the field.
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    d = _take(data, ("schema_version", "name", "description", "seeds", "budget", "corpora", "datasets",
                     "methods", "reference", "evaluation", "device"), "spec")
    if "schema_version" not in d:
        raise SpecError(f"schema_version: missing (this mae3d reads schema_version {SCHEMA_VERSION})")
    if d["schema_version"] != SCHEMA_VERSION:
        raise SpecError(f"schema_version: {d['schema_version']!r} is not supported (this mae3d reads "
                        f"{SCHEMA_VERSION})")
    name = _str(d.get("name"), "name", name=True)
    description = d.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"description: expected text, got {description!r}")
    seeds_raw = d.get("seeds", [0])
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise SpecError(f"seeds: expected a non-empty list of integers, got {seeds_raw!r}")
    seeds = tuple(_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds_raw))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds: a seed is listed twice: {list(seeds)}")
    device = _choice(d.get("device", "auto"), ("auto", "cpu", "cuda"), "device")
    corpora_raw = d.get("corpora") or {}
    if not isinstance(corpora_raw, Mapping):
        raise SpecError(f"corpora: expected a mapping name -> corpus, got {corpora_raw!r}")
    corpora = {str(k): _corpus(str(k), v, base) for k, v in corpora_raw.items()}
    for key in ("datasets", "methods"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise SpecError(f"{key}: expected a non-empty list")
    datasets = tuple(_dataset(v, i, base) for i, v in enumerate(d["datasets"]))
    _unique([x.name for x in datasets], "datasets")
    methods = tuple(_method(v, i, base, corpora) for i, v in enumerate(d["methods"]))
    _unique([m.name for m in methods], "methods")
    budget = flatten_overrides(d.get("budget"), "budget")
    by_name = {m.name: m for m in methods}
    for i, m in enumerate(methods):
        where = f"methods[{i}] {m.name!r}"
        if m.plans_from is not None:
            ref = by_name.get(m.plans_from)
            if ref is None:
                raise SpecError(f"{where}.plans_from: unknown method {m.plans_from!r}; valid: "
                                f"{', '.join(x.name for x in methods if x.pretrained)}")
            if not ref.pretrained:
                raise SpecError(f"{where}.plans_from: {m.plans_from!r} is a baseline without a checkpoint; "
                                "name a pre-trained method")
        _finetune_config(budget, m, f"{where}.finetune (with budget)")
    reference = d.get("reference")
    if reference is not None:
        if reference not in by_name:
            raise SpecError(f"reference: unknown method {reference!r}; valid: {', '.join(by_name)}")
    else:
        reference = next((m.name for m in methods if m.baseline == "fixed"), None)
    spec = BenchmarkSpec(name=name, description=description, datasets=datasets, methods=methods, seeds=seeds,
                         budget=budget, corpora=corpora, reference=reference, evaluation=_evaluation(
                             d.get("evaluation")), device=device, source=source)  # type: ignore[arg-type]
    if check_paths:
        _check_paths(spec)
    return spec


def load_spec(path: str | Path, *, check_paths: bool = True) -> BenchmarkSpec:
    """Read and validate a spec file (YAML, JSON by suffix); paths resolve against the file's folder.

    Raises:
        FileNotFoundError: no such file. SpecError: malformed file or spec.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark spec not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{path}: not valid {kind} ({first})") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        return validate(data, check_paths=check_paths, base_dir=path.resolve().parent, source=path.resolve())
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def finetune_config(spec: BenchmarkSpec, method: MethodEntry) -> Any:
    """The method's FinetuneConfig before the per-cell fields (budget, then the method's overrides)."""
    return _finetune_config(spec.budget, method, f"methods {method.name!r}.finetune")
