"""Figures of the benchmark report (matplotlib, Agg backend): Dice per dataset and ranks."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from mae3d.benchmark.aggregate import Aggregate
from mae3d.io.atomic import atomic_path

__all__ = ["method_colors", "plot_dice_per_dataset", "plot_pretrain_curves", "plot_ranks", "save_figure"]


def method_colors(methods: list[str]) -> dict[str, tuple[float, ...]]:
    """One stable colour per method (matplotlib's tab10 cycle in spec order)."""
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def save_figure(fig: plt.Figure, dest: Path, dpi: int = 110) -> Path:
    """Write ``fig`` atomically as PNG and close it."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return dest


def plot_dice_per_dataset(agg: Aggregate, dest: Path) -> Path:
    """One panel per dataset: mean Dice per method (bar, ± std) with the individual cells as dots."""
    with plt.style.context("default"):  # nnU-Net's progress plot changes the global style (seaborn)
        return _dice_per_dataset(agg, dest)


def _dice_per_dataset(agg: Aggregate, dest: Path) -> Path:
    colors = method_colors(agg.methods)
    n = max(1, len(agg.datasets))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 0.4, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    x = np.arange(len(agg.methods))
    for ax, ds in zip(axes.flat, agg.datasets, strict=False):
        for i, m in enumerate(agg.methods):
            entry = agg.entries.get((m, ds))
            if entry is None:
                ax.text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            err = 0.0 if math.isnan(entry.std) else entry.std
            ax.bar(i, entry.mean, yerr=err, color=colors[m], alpha=0.85, capsize=3)
            jitter = np.linspace(-0.15, 0.15, entry.n) if entry.n > 1 else np.zeros(1)
            ax.scatter(i + jitter, entry.values, s=10, color="black", zorder=3)
        ax.set_title(f"{ds} ({agg.roles[ds]})", fontsize=9)
        ax.set_xticks(x, agg.methods, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{agg.name}: Dice on held-out cases (mean ± std over folds x seeds; dots = cells)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, dest)


def plot_ranks(agg: Aggregate, dest: Path) -> Path:
    """Left: each method's rank on each dataset (1 = best); right: average rank per dataset group."""
    with plt.style.context("default"):
        return _ranks(agg, dest)


def _ranks(agg: Aggregate, dest: Path) -> Path:
    colors = method_colors(agg.methods)
    g = agg.groups["all"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(agg.datasets) + 3.5), 3.6),
                                      gridspec_kw={"width_ratios": [max(2, len(agg.datasets)), 2]})
    x = np.arange(len(agg.datasets))
    for m in agg.methods:
        ys = [g.ranks.get(ds, {}).get(m, np.nan) for ds in agg.datasets]
        left.plot(x, ys, marker="o", color=colors[m], label=m)
    left.set_xticks(x, agg.datasets, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("rank (1 = best)")
    left.set_ylim(len(agg.methods) + 0.5, 0.5)
    left.set_yticks(range(1, len(agg.methods) + 1))
    left.set_title("rank per dataset", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    groups = [k for k in ("dev", "test", "all") if agg.groups[k].avg_rank]
    width = 0.8 / max(1, len(agg.methods))
    for i, m in enumerate(agg.methods):
        vals = [agg.groups[k].avg_rank.get(m, np.nan) for k in groups]
        right.bar(np.arange(len(groups)) + (i - (len(agg.methods) - 1) / 2) * width, vals, width,
                  color=colors[m], label=m)
    right.set_xticks(np.arange(len(groups)), groups)
    right.set_ylabel("average rank (lower = better)")
    right.set_title("average rank", fontsize=9)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, dest)


def plot_pretrain_curves(logs: dict[str, dict[str, list[float]]], dest: Path) -> Path:
    """Pre-training reconstruction loss per epoch of each recipe method: train (solid) and held-out
    validation (dashed); ``logs`` maps a method to the columns of its ``log.csv``."""
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        colors = method_colors(list(logs))
        for m, log in logs.items():
            for key, style in (("train_loss", "-"), ("val_loss", "--")):
                ys = log.get(key) or []
                if ys:
                    ax.plot(log.get("epoch", list(range(len(ys)))), ys, style, color=colors[m],
                            label=f"{m} {key.split('_')[0]}")
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel("masked reconstruction loss")
        ax.set_title("pre-training", fontsize=10)
        ax.grid(alpha=0.3)
        if logs:
            ax.legend(fontsize=8)
        fig.tight_layout()
        return save_figure(fig, dest)
