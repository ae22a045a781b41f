"""Training monitoring: per-epoch CSV + TensorBoard, ``progress.png`` and reconstruction previews.

Only rank 0 creates a ``Monitor``. The CSV is rewritten atomically each epoch from the in-memory
history (which is also stored in checkpoints), so a resumed run continues the same file.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training nodes
import matplotlib.pyplot as plt
import numpy as np
import torch

from mae3d.io.atomic import atomic_path, write_text

__all__ = ["COLUMNS", "Monitor", "plot_progress", "save_preview"]

COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "epoch_time_s", "samples_per_s")


class Monitor:
    """Writes ``log.csv``, TensorBoard events and ``progress.png`` into ``out_dir``."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def log_epoch(self, history: list[dict[str, Any]]) -> None:
        """Persist the whole history; the last row is the epoch just finished."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        write_text(self.out_dir / "log.csv", buf.getvalue())
        row = history[-1]
        if self._tb is not None:
            for key in COLUMNS[1:]:
                value = row.get(key)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self._tb.add_scalar(key, value, row["epoch"])
            self._tb.flush()
        plot_progress(history, self.out_dir / "progress.png")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_progress(history: list[dict[str, Any]], dest: Path) -> None:
    """Loss curves, learning rate and epoch time against epoch."""
    if not history:
        return
    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(ep, [r["train_loss"] for r in history], label="train")
    axes[0].plot(ep, [r["val_loss"] for r in history], label="validation")
    axes[0].set_ylabel("reconstruction loss")
    axes[0].legend()
    axes[1].plot(ep, [r["lr"] for r in history])
    axes[1].set_ylabel("learning rate")
    axes[2].plot(ep, [r["epoch_time_s"] for r in history])
    axes[2].set_ylabel("epoch time (s)")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _mid_slices(vol_dhw: np.ndarray) -> list[np.ndarray]:
    d, h, w = vol_dhw.shape
    return [vol_dhw[d // 2], vol_dhw[:, h // 2], vol_dhw[:, :, w // 2]]


def save_preview(x_1dhw: torch.Tensor, masked_1dhw: torch.Tensor, recon_1dhw: torch.Tensor,
                 dest: Path, *, title: str = "") -> None:
    """Original, masked input and reconstruction; middle slices in three planes (one sample)."""
    vols = [t.detach().float().cpu().numpy()[0] for t in (x_1dhw, masked_1dhw, recon_1dhw)]
    lo, hi = np.percentile(vols[0], [1, 99])
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    for row, (name, vol) in enumerate(zip(("original", "masked input", "reconstruction"), vols,
                                          strict=True)):
        for col, sl in enumerate(_mid_slices(vol)):
            ax = axes[row, col]
            ax.imshow(np.rot90(sl), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
