"""``run_demo``: the one-command demo on the embedded real brain MRI (no download, CPU-sized).

Stages (each skipped when its finished marker exists, so a rerun reuses finished work):

1. ``data``: the downstream task as an nnU-Net raw dataset (default brain extraction: train on the MNI
   2009c + 2009a heads, test on the held-out ROBEX head) and the embedded unlabelled corpus manifest
   *without* the task's test images (no pre-training on evaluation data);
2. ``prepare``: the corpus resampled to ``spacing`` and stored as blosc2 (``mae3d prepare``);
3. ``pretrain``: a short masked-image-modelling pre-training of a small ResEnc (``mae3d pretrain``);
4. ``benchmark``: fine-tune the pre-trained network and the same network from scratch (same fixed plans,
   budget and seed), predict the test case(s) and evaluate them (:mod:`mae3d.benchmark.runner` cells);
5. ``report``: ``OUT/report.md`` with stage times, the Dice table, loss curves, a reconstruction preview,
   a Dice bar chart and prediction-vs-reference overlays (rewritten on every run).

Markers: ``OUT/stages/<stage>.json`` (with the stage's wall time); the benchmark cells have their own
``result.json``. Changing the configuration of a finished stage is refused, not silently mixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mae3d.config import ConfigError, apply_overrides, write_run_config
from mae3d.io.atomic import read_json, write_json

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

log = logging.getLogger(__name__)

PRETRAINED, SCRATCH = "pretrained", "scratch"
STAGES = ("data", "prepare", "pretrain", "benchmark", "report")


@dataclass
class DemoConfig:
    """Sizes of the demo (defaults: about 15 minutes on 2 shared CPU cores); every field takes ``--set``."""

    # embedded downstream task: brainextraction, cerebra or tumour
    task: str = "brainextraction"
    # mm; the corpus is prepared and the task resampled to this isotropic spacing
    spacing: float = 3.0
    # pre-training and fine-tuning patch (voxels); a multiple of the model's total stride (16). 48^3 at
    # 3 mm covers 144 mm (most of a brain) at a quarter of the cost of 64^3
    patch_size: tuple[int, int, int] = (48, 48, 48)
    model: str = "resenc-xs"
    # masked-image-modelling method: s3d or mae
    method: str = "s3d"
    mask_block_size: int = 16
    mask_ratio: float = 0.75
    pretrain_epochs: int = 25
    pretrain_iterations: int = 10
    pretrain_batch_size: int = 2
    pretrain_lr: float = 1e-2
    finetune_epochs: int = 20
    finetune_iterations: int = 10
    # peak lr of both fine-tunings; null: the paper's defaults (1e-3 pre-trained, 1e-2 from scratch)
    finetune_lr: float | None = None
    # linear warm-up epochs of the fine-tuning schedule (the paper's 50 scaled to the short run)
    warmup_epochs: int = 2
    seed: int = 0
    # auto = cuda if available else cpu
    device: str = "auto"
    # torch intra-op threads of every stage (0 = torch's default, one per core). 1 is the safe choice on a
    # shared machine: with more threads than free cores, OpenMP's spin-waiting makes a step several
    # times slower
    threads: int = 1
    # leave the task's test images out of the pre-training corpus
    exclude_test_images: bool = True
    # extra PretrainConfig / FinetuneConfig overrides ("key=value"), applied last
    pretrain_set: list[str] = field(default_factory=list)
    finetune_set: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from mae3d.data import DATASETS

        if self.task not in DATASETS:
            raise ConfigError(f"task: unknown embedded dataset {self.task!r}; valid: "
                              f"{', '.join(DATASETS.names())}")
        if self.spacing <= 0:
            raise ConfigError(f"spacing must be > 0 mm, got {self.spacing}")
        for name in ("pretrain_epochs", "pretrain_iterations", "pretrain_batch_size", "finetune_epochs",
                     "finetune_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and what it measured."""

    out: Path
    report: Path
    figures: dict[str, Path]
    table: list[dict[str, Any]]  # one row per method: dice, nsd, hd95, finetune_s
    stage_seconds: dict[str, float]
    reused: list[str]  # stages skipped because they were finished

    def format_table(self) -> str:
        """The final table (fixed width) printed by ``mae3d demo``."""
        rows = [("method", "Dice", "NSD@1mm", "HD95 [mm]", "fine-tune [s]")]
        for r in self.table:
            rows.append((r["method"], f"{r['dice']:.4f}", f"{r['nsd']:.4f}", f"{r['hd95']:.2f}",
                         f"{r['finetune_s']:.0f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "-" * max(len(x) for x in lines))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ stages
class _Stages:
    """Finished markers ``OUT/stages/<name>.json`` holding the stage's config digest and wall time."""

    def __init__(self, out: Path, say: Callable[[str], None]) -> None:
        self.dir = out / "stages"
        self.say = say
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def run(self, name: str, what: dict[str, Any], fn: Callable[[], Any]) -> Any:
        marker = self.dir / f"{name}.json"
        if marker.is_file():
            saved = read_json(marker)
            if saved.get("config") != what:
                raise ConfigError(f"{marker}: stage {name!r} finished with another configuration; use "
                                  "another output folder (or delete the stage's outputs and marker)")
            self.seconds[name] = float(saved.get("seconds", 0.0))
            self.reused.append(name)
            self.say(f"[{name}] finished before ({self.seconds[name]:.0f} s): reused")
            return saved.get("result")
        self.say(f"[{name}] running ...")
        t = time.monotonic()
        result = fn()
        self.seconds[name] = time.monotonic() - t
        write_json(marker, {"config": what, "seconds": self.seconds[name], "result": result})
        self.say(f"[{name}] done in {self.seconds[name]:.0f} s")
        return result


def _test_sources(dataset_dir: Path) -> list[str]:
    """Embedded source names of the dataset's held-out images (from its dataset.json)."""
    cases = (read_json(dataset_dir / "dataset.json").get("mae3d") or {}).get("cases") or {}
    return sorted({info["image"] for info in cases.values()
                   if info.get("split") == "test" and "image" in info})


def _stage_data(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from mae3d.benchmark.assets import filtered_embedded_manifest
    from mae3d.data import NnunetDataConfig, build_nnunet_dataset, dataset_folder_name

    raw = out / "data" / "raw"
    dataset = raw / dataset_folder_name(cfg.task)
    if not dataset.is_dir():
        dataset = build_nnunet_dataset(cfg.task, raw, NnunetDataConfig(spacing=cfg.spacing))
    exclude = tuple(_test_sources(dataset)) if cfg.exclude_test_images else ()
    manifest = filtered_embedded_manifest(out / "data" / "corpus", exclude)
    return {"dataset": str(dataset), "manifest": str(manifest), "excluded": list(exclude)}


def _stage_prepare(cfg: DemoConfig, manifest: Path, out: Path) -> dict[str, Any]:
    from mae3d.preprocessing.config import PrepareConfig
    from mae3d.preprocessing.runner import prepare

    s = float(cfg.spacing)
    report = prepare(manifest, out / "prepared", PrepareConfig(target_spacing=(s, s, s),
                                                               patch_size=tuple(cfg.patch_size), workers=1),
                     progress=False)
    if report.skipped:
        log.warning("prepare skipped %d images: %s", len(report.skipped), report.skipped)
    return {"prepared": str(out / "prepared"), "cases": len(report.done) + len(report.already_done)}


def pretrain_overrides(cfg: DemoConfig, corpus: Path, device: str) -> list[str]:
    """PretrainConfig overrides of the demo's pre-training."""
    p = list(cfg.patch_size)
    return [f"data.corpus={corpus}", f"model.name={cfg.model}", f"method.name={cfg.method}",
            f"method.mask.block_size={cfg.mask_block_size}", f"method.mask.ratio={cfg.mask_ratio}",
            f"loader.patch_size=[{p[0]}, {p[1]}, {p[2]}]", f"loader.batch_size={cfg.pretrain_batch_size}",
            "loader.workers=0", f"train.epochs={cfg.pretrain_epochs}", "train.val_iterations=2",
            f"train.iterations_per_epoch={cfg.pretrain_iterations}", f"optim.lr={cfg.pretrain_lr}",
            f"train.seed={cfg.seed}", f"train.device={device}", f"train.num_threads={cfg.threads}",
            f"train.preview_every={max(1, cfg.pretrain_epochs // 4)}", "train.tensorboard=false",
            f"checkpoint.every={max(1, cfg.pretrain_epochs // 4)}", *cfg.pretrain_set]


def _stage_pretrain(cfg: DemoConfig, prepared: Path, out: Path, device: str) -> dict[str, Any]:
    from mae3d.benchmark.assets import redirect_output
    from mae3d.pretraining.api import pretrain
    from mae3d.pretraining.config import PretrainConfig

    pcfg = apply_overrides(PretrainConfig(), pretrain_overrides(cfg, prepared, device))
    with redirect_output(out / "pretrain.log"):
        final = pretrain(pcfg, out / "pretrain", resume="auto")
    return {"checkpoint": str(final)}


def benchmark_spec(cfg: DemoConfig, dataset: Path, checkpoint: Path) -> Any:
    """The demo's fine-tuning comparison as a benchmark spec: pre-trained vs from scratch, one task."""
    from mae3d.benchmark.spec import validate

    budget: dict[str, Any] = {
        "epochs": cfg.finetune_epochs, "iterations_per_epoch": cfg.finetune_iterations,
        "val_iterations_per_epoch": 2, "batch_size": 2, "da_workers": 0, "export_workers": 1,
        "preprocess_workers": 1, "final_validation": False,
        "schedule": {"name": "warmup", "warmup_epochs": cfg.warmup_epochs},
    }
    if cfg.finetune_lr is not None:
        budget["lr"] = cfg.finetune_lr
    return validate({
        "schema_version": 1, "name": "demo",
        "description": f"mae3d demo: {cfg.method.upper()}-pre-trained {cfg.model} vs from scratch on "
                       f"{cfg.task}",
        "seeds": [cfg.seed], "budget": budget,
        "datasets": [{"name": cfg.task, "role": "test", "path": str(dataset), "split": "fixed"}],
        "methods": [{"name": PRETRAINED, "checkpoint": str(checkpoint), "finetune": list(cfg.finetune_set)},
                    {"name": SCRATCH, "baseline": "fixed", "plans_from": PRETRAINED,
                     "finetune": list(cfg.finetune_set)}],
        "reference": SCRATCH, "evaluation": {"mirroring": False},
    })


# ------------------------------------------------------------------------------------------ entry point
def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig | None = None, *,
             progress: Callable[[str], None] | None = print) -> DemoResult:
    """Run (or resume) the demo into ``out``; see the module docstring for the stages.

    Returns:
        The report path, figures, final table and per-stage wall times.
    """
    import torch

    cfg = cfg or DemoConfig()
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_demo(Path(out), cfg, progress or (lambda _msg: None))
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, cfg: DemoConfig, say: Callable[[str], None]) -> DemoResult:
    from mae3d.benchmark.demo_report import write_demo_report
    from mae3d.benchmark.runner import run_benchmark
    from mae3d.finetuning.config import resolve_device

    device = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").is_file():
        write_run_config(out, cfg)  # rewritten at the end: a refused rerun leaves the run's own config
    stages = _Stages(out, say)
    start = time.monotonic()
    data = stages.run("data", {"task": cfg.task, "spacing": cfg.spacing, "exclude": cfg.exclude_test_images},
                      lambda: _stage_data(cfg, out))
    prep = stages.run("prepare", {"spacing": cfg.spacing, "patch_size": list(cfg.patch_size),
                                  "excluded": data["excluded"]},
                      lambda: _stage_prepare(cfg, Path(data["manifest"]), out))
    pre_cfg = [o for o in pretrain_overrides(cfg, Path(prep["prepared"]), device)
               if not o.startswith(("train.device=", "train.num_threads=", "data.corpus="))]
    pre = stages.run("pretrain", {"overrides": pre_cfg},
                     lambda: _stage_pretrain(cfg, Path(prep["prepared"]), out, device))
    spec = benchmark_spec(cfg, Path(data["dataset"]), Path(pre["checkpoint"]))
    bench_dir = out / "benchmark"
    say("[benchmark] fine-tune pre-trained and from scratch, predict and evaluate the held-out case(s)")
    summary = run_benchmark(spec, bench_dir, device=device, progress=lambda m: say("  " + m))
    stages.seconds["benchmark"] = sum(float(read_json(bench_dir / c.rel_dir() / "result.json").get(
        "seconds", 0.0)) for c in summary.cells)
    if summary.skipped and not summary.done:
        stages.reused.append("benchmark")
    t = time.monotonic()
    result = write_demo_report(out, cfg, spec, bench_dir, Path(data["dataset"]), stages.seconds,
                               stages.reused)
    stages.seconds["report"] = time.monotonic() - t
    result.stage_seconds = dict(stages.seconds)
    write_run_config(out, cfg)
    say(f"demo finished in {(time.monotonic() - start) / 60:.1f} min this run "
        f"(reused: {', '.join(stages.reused) or 'nothing'})")
    return result
