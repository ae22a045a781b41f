"""The demo's report: ``OUT/report.md`` plus figures in ``OUT/figures/`` (matplotlib Agg), drawn from the
benchmark runner's outputs (``OUT/pretrain/<method>``, ``OUT/cells``, ``OUT/work/<task>/test``).

* ``loss_curves.png``: pre-training train / validation loss per epoch (``pretrain/<method>/log.csv``) and the
  fine-tuning losses of both methods (nnU-Net's Dice + CE, from the fold checkpoints' logs);
* ``reconstruction.png``: the last pre-training reconstruction preview (original, masked input,
  reconstruction);
* ``dice.png``: Dice / NSD of both methods on the held-out case(s);
* ``overlay.png``: for each held-out case, the slice with the largest reference area: reference and
  both predictions over the image.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

from mae3d.benchmark.cells import load_results
from mae3d.benchmark.plots import method_colors, save_figure
from mae3d.benchmark.report import format_table, read_log_csv, write_report
from mae3d.io.atomic import atomic_path, read_json, write_text

__all__ = ["DemoResult", "plot_loss_curves", "plot_overlay", "write_demo_report"]


def _finetune_log(model_dir: Path, fold: int) -> dict[str, list[float]]:
    from mae3d.transfer import load_training_checkpoint

    ckpt_path = model_dir / f"fold_{fold}" / "checkpoint_final.pth"
    if not ckpt_path.is_file():
        return {}
    logging = load_training_checkpoint(ckpt_path).get("logging") or {}
    return {k: [float(x) for x in logging.get(k, [])] for k in ("train_losses", "val_losses")}


def plot_loss_curves(pretrain: dict[str, list[float]], finetune: dict[str, dict[str, list[float]]],
                     dest: Path) -> Path:
    """Left: pre-training losses per epoch; right: fine-tuning losses per epoch of each method."""
    with plt.style.context("default"):
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        if pretrain:
            ep = pretrain.get("epoch", list(range(len(pretrain.get("val_loss", [])))))
            for key, style in (("train_loss", "-"), ("val_loss", "--")):
                if key in pretrain:
                    a.plot(ep, pretrain[key], style, marker="o", ms=3, label=key.replace("_", " "))
        a.set_xlabel("epoch")
        a.set_ylabel("masked reconstruction MSE")
        a.set_title("pre-training (epoch 0 = untrained)", fontsize=10)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
        colors = method_colors(list(finetune))
        for m, log in finetune.items():
            for key, style in (("train_losses", "-"), ("val_losses", "--")):
                ys = log.get(key) or []
                if ys:
                    b.plot(range(1, len(ys) + 1), ys, style, color=colors[m],
                           label=f"{m} {'train' if key.startswith('train') else 'val'}")
        b.set_xlabel("epoch")
        b.set_ylabel("Dice + CE loss (nnU-Net)")
        b.set_title("fine-tuning", fontsize=10)
        b.grid(alpha=0.3)
        b.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, dest)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def plot_overlay(image: Path, reference: Path, predictions: dict[str, Path], dest: Path) -> Path:
    """Reference and each prediction over the image on the axial slice with the largest reference area."""
    img, ref = _read(image).astype(np.float32), _read(reference)
    if img.ndim == 4:  # a trailing channel axis of 1
        img = img[..., 0] if img.shape[-1] == 1 else img[0]
    preds = {m: _read(p) for m, p in predictions.items()}
    z = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
    lo, hi = np.percentile(img[z], [1, 99])
    n_labels = int(max(ref.max(), *(p.max() for p in preds.values()))) if preds else int(ref.max())
    cmap = plt.get_cmap("tab10", max(n_labels, 1))

    def show(ax: Any, seg: np.ndarray | None, title: str) -> None:
        ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi, origin="lower")
        if seg is not None:
            overlay = np.ma.masked_where(seg[z] == 0, seg[z])
            ax.imshow(overlay, cmap=cmap, vmin=0.5, vmax=max(n_labels, 1) + 0.5, alpha=0.45, origin="lower",
                      interpolation="nearest")
        ax.contour(ref[z] > 0, levels=[0.5], colors="lime", linewidths=0.8, origin="lower")
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    with plt.style.context("default"):
        fig, axes = plt.subplots(1, 1 + len(preds), figsize=(3.2 * (1 + len(preds)), 3.6), squeeze=False)
        show(axes[0, 0], ref, "reference")
        for ax, (m, seg) in zip(axes[0, 1:], preds.items(), strict=True):
            inter = np.logical_and(seg > 0, ref > 0).sum()
            dice = 2 * inter / max(1, (seg > 0).sum() + (ref > 0).sum())
            show(ax, seg, f"{m}: Dice {dice:.3f} (whole volume)")
        fig.suptitle(f"{reference.name}, axial slice {z} (green: reference outline)", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, dest)


def plot_dice_bars(table: list[dict[str, Any]], dest: Path) -> Path:
    """Dice and NSD of each method on the held-out case(s), values written on the bars."""
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        colors = method_colors([r["method"] for r in table])
        x = np.arange(2)
        width = 0.8 / max(1, len(table))
        for i, r in enumerate(table):
            vals = [r["dice"], r["nsd"]]
            bars = ax.bar(x + (i - (len(table) - 1) / 2) * width, vals, width, color=colors[r["method"]],
                          label=r["method"])
            for bar, v in zip(bars, vals, strict=True):
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
        ax.set_xticks(x, ["Dice", "NSD @ 1 mm"])
        ax.set_ylim(0, 1.2)
        ax.legend(fontsize=8, loc="upper right", ncol=max(1, len(table)))
        ax.set_title("held-out case(s)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return save_figure(fig, dest)


def _copy(src: Path, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and what it measured."""

    out: Path
    report: Path
    figures: dict[str, Path]
    table: list[dict[str, Any]]  # one row per method: dice, nsd, hd95, finetune_s
    seconds: dict[str, float]  # wall time: this run, the pre-training, each method's cell
    reused: bool  # every cell had finished before this run

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


def _task_description(out: Path, ds_name: str) -> str:
    """The embedded dataset's own description (its caveats included), from its dataset.json."""
    found = sorted((out / "data" / "raw" / ds_name).glob("Dataset*/dataset.json"))
    return str(read_json(found[0]).get("description", "")) if found else ""


def _pretrain_runs(out: Path, spec: Any) -> dict[str, Path]:
    return {m.name: out / "pretrain" / m.name for m in spec.methods if m.pretrain is not None}


def write_demo_report(out: Path, spec: Any, cfg: Any, *, run_seconds: float = 0.0,
                      reused: bool = False) -> DemoResult:
    """Write ``OUT/report.md`` and ``OUT/figures/*.png`` from the benchmark runner's outputs in ``out``
    (``spec``: the demo's :class:`~mae3d.benchmark.spec.BenchmarkSpec`; ``cfg``: its DemoConfig, for the
    text), and the benchmark report ``OUT/report/``."""
    figures_dir = out / "figures"
    every = load_results(out)
    order = [m.name for m in spec.methods]
    results = sorted((r for r in every if r.get("status") == "ok" and r.get("method") in order),
                     key=lambda r: order.index(r["method"]))
    failed = [r for r in every if r.get("status") != "ok"]
    table = [{"method": r["method"], "dice": r["dice"], "nsd": r["nsd"], "hd95": r["hd95"],
              "finetune_s": r["timings"]["finetune_s"]} for r in results]
    bench_files = write_report(out)
    runs = _pretrain_runs(out, spec)
    pre_logs = {m: read_log_csv(run / "log.csv") for m, run in runs.items()}
    seconds: dict[str, float] = {"this run": run_seconds}
    for m, log in pre_logs.items():
        seconds[f"pre-training {m}"] = float(np.nansum(log.get("epoch_time_s", [])))
    for r in results:
        seconds[f"cell {r['method']}"] = float(r.get("seconds", 0.0))
    figures: dict[str, Path] = {}
    figures["loss_curves"] = plot_loss_curves(
        next(iter(pre_logs.values()), {}),
        {r["method"]: _finetune_log(Path(r["model_dir"]), int(r["fold"])) for r in results},
        figures_dir / "loss_curves.png")
    previews = sorted(p for run in runs.values() for p in (run / "previews").glob("epoch_*.png"))
    if previews:
        figures["reconstruction"] = _copy(previews[-1], figures_dir / "reconstruction.png")
    if table:
        figures["dice"] = plot_dice_bars(table, figures_dir / "dice.png")
    ds_name = spec.datasets[0].name
    if results:
        case = results[0]["test_cases"][0]
        test_dir = out / "work" / ds_name / "test" / f"fold_{results[0]['fold']}"
        image = next(iter(sorted((test_dir / "images").glob(f"{case}_0000.*"))), None)
        if image is not None:
            ending = image.name[len(f"{case}_0000"):]
            preds = {r["method"]: Path(r["_path"]).parent / "pred" / f"{case}{ending}" for r in results}
            figures["overlay"] = plot_overlay(image, test_dir / "labels" / f"{case}{ending}", preds,
                                              figures_dir / "overlay.png")

    corpus = next(iter(spec.corpora.values()), None)
    excluded = corpus.exclude if corpus is not None else ()
    dice_rows = [[r["method"], f"{100 * r['dice']:.2f}", f"{100 * r['nsd']:.2f}", f"{r['hd95']:.2f}",
                  f"{r['finetune_s']:.0f}"] for r in table]
    ref = next((r for r in table if r["method"] == spec.reference), None)
    train = ", ".join(results[0]["train_cases"]) if results else "?"
    test = ", ".join(results[0]["test_cases"]) if results else "?"
    lines = [
        f"# mae3d demo: {cfg.method.upper()} pre-training vs from scratch on `{cfg.task}`\n",
        f"Pre-training: {cfg.model}, {cfg.method}, patch {list(cfg.patch_size)} at {cfg.spacing} mm, "
        f"{cfg.pretrain_epochs} epochs x {cfg.pretrain_iterations} iterations "
        f"(batch {cfg.pretrain_batch_size}), on the embedded real brain MRI corpus without the task's "
        f"held-out images ({', '.join(excluded) or 'none excluded'}). Fine-tuning: nnU-Net with the "
        f"checkpoint's fixed plans, {cfg.finetune_epochs} epochs x {cfg.finetune_iterations} iterations, "
        f"warm-up {cfg.warmup_epochs} epochs, seed {cfg.seed}, trained on {train}, tested on {test}; the "
        "from-scratch run uses the same plans, budget and seed without the pre-trained weights.\n",
        f"Task: {_task_description(out, ds_name)}\n",
        "## Result on the held-out case(s)\n",
        format_table(["method", "Dice (%)", "NSD@1mm (%)", "HD95 (mm)", "fine-tune (s)"], dice_rows) + "\n",
    ]
    if ref is not None and len(table) > 1:
        other = [r for r in table if r is not ref]
        lines.append("Δ Dice vs from scratch: " + ", ".join(
            f"{r['method']} {100 * (r['dice'] - ref['dice']):+.2f}" for r in other) + " points. "
            "One seed on one held-out scan of a tiny corpus: it shows that the pipeline works end to end and "
            "produces usable segmentations, not what pre-training buys (for that, the multi-seed CPU "
            "benchmark: docs/benchmarks.md).\n")
    lines += [
        "## Figures\n",
        "![loss curves](figures/loss_curves.png)\n",
        "![reconstruction](figures/reconstruction.png)\n" if "reconstruction" in figures else "",
        "![Dice](figures/dice.png)\n" if "dice" in figures else "",
        "![overlay](figures/overlay.png)\n" if "overlay" in figures else "",
        "## Wall time\n",
        format_table(["part", "seconds"], [[k, f"{v:.0f}"] for k, v in seconds.items()])
        + ("\n\nEverything had finished before: this run only rewrote the reports.\n" if reused
           else "\n"),
        "## Where things are\n",
        f"- `data/raw/{ds_name}/`: the downstream nnU-Net dataset; "
        f"`data/corpora/{corpus.name if corpus else '?'}/`: the pre-training corpus (manifest.json, "
        "prepared/)",
        "- `pretrain/<method>/`: log.csv, progress.png, previews/, checkpoint_final.pth",
        "- `cells/<method>/<task>/fold_0/seed_<s>/`: fine-tuned model, predictions, metrics, result.json",
        f"- `{bench_files.markdown.relative_to(out)}`: the benchmark report; `benchmark.json`: the spec as "
        "run; `figures/`: the figures above; `config.json`: the demo configuration",
    ]
    if failed:
        lines.append("\n## Failed\n\n" + "\n".join(f"- {r['method']}: {r.get('error')}" for r in failed))
    report = write_text(out / "report.md", "\n".join(x for x in lines if x) + "\n")
    return DemoResult(out=out, report=report, figures=figures, table=table, seconds=seconds, reused=reused)
