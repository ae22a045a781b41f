"""``run_demo``: the one-command demo on the embedded real brain MRI (no download, CPU-sized).

The demo is a benchmark spec (:func:`demo_spec`; ``benchmarks/specs/demo.yaml`` is the same spec with the
default sizes) run by the benchmark runner, then a report drawn from the runner's outputs:

1. the runner builds the downstream task as an nnU-Net raw dataset (default: brain extraction on the
   heads with skull, trained on the MNI 2009c T1 and the ROBEX subject, tested on the MNI 2009c T2) and
   the embedded unlabelled corpus *without* the held-out image (no pre-training on evaluation data),
   prepares the corpus,
   pre-trains a small ResEnc by masked image modelling (``OUT/pretrain/pretrained``), then fine-tunes the
   pre-trained network and the same network from scratch (same fixed plans, budget and seed), predicts
   the held-out case(s) and scores them (``OUT/cells``); with ``workers`` 2 the pre-training uses both
   cores and the two fine-tunings run side by side;
2. :func:`~mae3d.benchmark.demo_report.write_demo_report` writes ``OUT/report.md`` with the Dice table,
   loss curves, a reconstruction preview, a Dice bar chart and prediction-vs-reference overlays, and the
   benchmark report ``OUT/report/report.md``.

Rerunning reuses everything finished (the runner's resume rules); changing the sizes of a finished run is
refused, not silently mixed: use another ``OUT``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mae3d.benchmark.demo_report import DemoResult, write_demo_report
from mae3d.config import ConfigError, write_run_config

__all__ = ["PRETRAINED", "SCRATCH", "DemoConfig", "DemoResult", "demo_spec", "run_demo"]

PRETRAINED, SCRATCH = "pretrained", "scratch"
CORPUS = "embedded"


@dataclass
class DemoConfig:
    """Sizes of the demo (defaults: about 15 minutes on 2 CPU cores); every field takes ``--set``."""

    # embedded downstream task (mae3d.data.DATASETS). Default: brain extraction on the three heads with
    # skull, trained on the MNI 2009c T1 and the ROBEX subject, tested on the MNI 2009c T2 (docs/demo.md
    # says why not on the ROBEX head)
    task: str = "heads"
    # held-out case ids of the task (taken out of its training cases); empty: the task's own test split
    test_cases: list[str] = field(default_factory=lambda: ["mni2009c_t2"])
    # mm; the corpus is prepared and the task resampled to this isotropic spacing
    spacing: float = 3.0
    # pre-training and fine-tuning patch (voxels); a multiple of the model's total stride (16). 48^3 at
    # 3 mm covers 144 mm (most of a brain) at a quarter of the cost of 64^3
    patch_size: tuple[int, int, int] = (48, 48, 48)
    model: str = "resenc-xs"
    # masked-image-modelling method: s3d or mae
    method: str = "s3d"
    mask_block_size: int = 16
    pretrain_epochs: int = 25
    pretrain_iterations: int = 10
    pretrain_batch_size: int = 2
    pretrain_lr: float = 1e-2
    finetune_epochs: int = 40
    finetune_iterations: int = 10
    # peak lr of both fine-tunings; null: the paper's defaults (1e-3 pre-trained, 1e-2 from scratch)
    finetune_lr: float | None = None
    # linear warm-up epochs of the fine-tuning schedule (the paper's 50 scaled to the short run)
    warmup_epochs: int = 2
    seed: int = 0
    # auto = cuda if available else cpu
    device: str = "auto"
    # processes: the two fine-tunings run side by side when 2 (the pre-training, alone, gets all threads)
    workers: int = 2
    # torch intra-op threads per worker (0 = the cores divided by the workers). On a machine shared with
    # other jobs use workers=1, threads=1: with more threads than free cores, OpenMP's spin-waiting makes a
    # step several times slower
    threads: int = 0
    # leave the task's held-out images out of the pre-training corpus
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
                     "finetune_iterations", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.threads < 0:
            raise ConfigError(f"warmup_epochs and threads must be >= 0, got {self.warmup_epochs}, "
                              f"{self.threads}")


def _pretrain_set(cfg: DemoConfig) -> dict[str, Any]:
    return {
        "model.name": cfg.model, "method.name": cfg.method, "method.mask.block_size": cfg.mask_block_size,
        "loader.patch_size": list(cfg.patch_size), "loader.batch_size": cfg.pretrain_batch_size,
        "loader.workers": 0, "train.epochs": cfg.pretrain_epochs,
        "train.iterations_per_epoch": cfg.pretrain_iterations, "optim.lr": cfg.pretrain_lr,
        "train.seed": cfg.seed, "train.preview_every": max(1, cfg.pretrain_epochs // 4),
        "train.tensorboard": False, "checkpoint.every": max(1, cfg.pretrain_epochs // 4),
    }


def demo_spec_dict(cfg: DemoConfig | None = None) -> dict[str, Any]:
    """The demo as a benchmark spec mapping (the file format of ``benchmarks/specs/demo.yaml``)."""
    from mae3d.data import DATASETS
    from mae3d.data.corpus import CORPUS_IMAGES

    cfg = cfg or DemoConfig()
    s = float(cfg.spacing)
    budget: dict[str, Any] = {
        "epochs": cfg.finetune_epochs, "iterations_per_epoch": cfg.finetune_iterations,
        "val_iterations_per_epoch": 2, "batch_size": 2, "da_workers": 0, "export_workers": 1,
        "preprocess_workers": 1, "final_validation": False,
        "schedule": {"name": "warmup", "warmup_epochs": cfg.warmup_epochs},
    }
    if cfg.finetune_lr is not None:
        budget["lr"] = cfg.finetune_lr
    held_out = list(cfg.test_cases) or list(DATASETS.get(cfg.task).held_out)
    corpus_images = {c.image for c in CORPUS_IMAGES}
    exclude = [name for name in held_out if name in corpus_images] if cfg.exclude_test_images else []
    split: dict[str, Any] | str = ({"kind": "fixed", "test": list(cfg.test_cases)} if cfg.test_cases
                                   else "fixed")
    pretrain_set: dict[str, Any] | list[str] = _pretrain_set(cfg)
    if cfg.pretrain_set:  # extra "key=value" strings: the whole recipe as strings, the extras last
        pretrain_set = [*(f"{k}={json.dumps(v)}" for k, v in _pretrain_set(cfg).items()),
                        *cfg.pretrain_set]
    return {
        "schema_version": 1, "name": "demo",
        "description": f"mae3d demo: {cfg.method.upper()}-pre-trained {cfg.model} vs the same network from "
                       f"scratch on {cfg.task} (one seed, held out: {', '.join(held_out)})",
        "seeds": [cfg.seed], "device": cfg.device, "budget": budget,
        "evaluation": {"mirroring": False},
        "corpora": {CORPUS: {"embedded": True, "exclude": exclude,
                             "prepare": {"target_spacing": [s, s, s], "patch_size": list(cfg.patch_size),
                                         "workers": 1}}},
        "datasets": [{"name": cfg.task, "role": "test", "embedded": cfg.task, "spacing": s,
                      "split": split}],
        "methods": [{"name": PRETRAINED, "pretrain": {"corpus": CORPUS, "set": pretrain_set},
                     "finetune": list(cfg.finetune_set)},
                    {"name": SCRATCH, "baseline": "fixed", "plans_from": PRETRAINED,
                     "finetune": list(cfg.finetune_set)}],
        "reference": SCRATCH,
    }


def demo_spec(cfg: DemoConfig | None = None) -> Any:
    """The demo as a validated :class:`~mae3d.benchmark.spec.BenchmarkSpec`."""
    from mae3d.benchmark.spec import validate

    return validate(demo_spec_dict(cfg), check_paths=False)


def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig | None = None, *,
             progress: Callable[[str], None] | None = print) -> DemoResult:
    """Run (or resume) the demo into ``out``; see the module docstring.

    Returns:
        The report path, figures, final table and wall times.
    """
    from mae3d.benchmark.runner import run_benchmark

    cfg = cfg or DemoConfig()
    out = Path(out)
    say = progress or (lambda _msg: None)
    spec = demo_spec(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").is_file():
        write_run_config(out, cfg)  # rewritten at the end: a refused rerun leaves the run's own config
    start = time.monotonic()
    summary = run_benchmark(spec, out, threads=cfg.threads, workers=cfg.workers, progress=say)
    seconds = time.monotonic() - start
    result = write_demo_report(out, spec, cfg, run_seconds=seconds, reused=bool(summary.skipped)
                               and not summary.done)
    write_run_config(out, cfg)
    say(f"demo finished in {seconds / 60:.1f} min this run")
    return result
