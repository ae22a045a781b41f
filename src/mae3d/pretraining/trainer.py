"""The pre-training loop: masked image modelling of a ResEnc U-Net on a prepared corpus.

One ``Pretrainer`` per process. Under ``torchrun`` every rank builds the same model (same seed),
wraps it in DDP, draws its own data (batch ``n`` seeded by ``(seed, rank, n)``) and masks (seeded by
``(seed, rank, epoch)``), and only rank 0 writes files. All randomness that shapes an epoch is a
function of the seed and the epoch number, so resuming from the checkpoint written at the end of
epoch ``e`` reproduces the uninterrupted run from epoch ``e + 1`` on (on the same hardware and thread
count; the number of loader workers does not matter). ``train.seed`` is the only seed: it also
fixes the initial weights and the train/validation split, and the checkpoint records it.

Validation runs ``train.val_iterations`` batches per epoch over fixed held-out patches with fixed
masks. Cases with an anonymisation (defacing) mask have their defaced voxels zeroed in the input and
excluded from the loss (``data.exclude_defaced``).

Outputs in the run folder: ``config.json`` (resolved config + provenance), ``log.csv``,
``tensorboard/``, ``progress.png``, ``previews/epoch_XXXX.png``, ``checkpoint_latest.pth`` (every
``checkpoint.every`` epochs, for resuming), ``checkpoint_final.pth`` and ``adaptation_plan.json``
(nnssl-compatible) at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mae3d.config import from_dict, provenance, to_dict, write_run_config
from mae3d.io.atomic import write_json
from mae3d.models import build_network, check_patch_size, describe, resolve
from mae3d.preprocessing.store import PreprocessedCorpus
from mae3d.pretraining.config import PretrainConfig
from mae3d.pretraining.data import build_train_loader, build_val_loader, iterate_batches, split_corpus
from mae3d.pretraining.data.config import MASK_KINDS
from mae3d.pretraining.distributed import DistInfo, all_reduce_mean, split_batch
from mae3d.pretraining.masking import mask_grid_shape, sample_block_mask, upsample_mask
from mae3d.pretraining.methods import METHODS, SSLMethod, build_method
from mae3d.pretraining.monitor import Monitor, save_preview
from mae3d.pretraining.schedules import SCHEDULES, lr_at
from mae3d.transfer.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    make_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mae3d.transfer.nnssl import adaptation_plan
from mae3d.utils.device import autocast_dtype

__all__ = ["NonFiniteLossError", "Pretrainer", "freeze_unused_parameters"]

log = logging.getLogger(__name__)

DEFACING_MASK = "anonymization"  #: stored mask kind marking defaced voxels (non-zero = defaced)
DEFACED_KEY = MASK_KINDS[DEFACING_MASK]  #: its batch key
LATEST = "checkpoint_latest.pth"
FINAL = "checkpoint_final.pth"


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf losses; the last good checkpoint is kept untouched."""


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def freeze_unused_parameters(method: SSLMethod, patch_size: tuple[int, ...], block_size: int) -> list[str]:
    """Freeze parameters that get no gradient in this configuration; returns their names.

    Examples: the unused deep-supervision heads of the decoder, or S3D mask tokens of stages
    coarser than the mask grid (those stages are dense, so they have no masked positions). Found by
    one forward/backward on a zero batch with a fixed mask, so DDP needs no per-step search for
    unused parameters (``find_unused_parameters``) and the optimiser keeps no state for them.
    """
    device = next(method.parameters()).device
    x_bcdhw = torch.zeros(1, 1, *patch_size, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    mask_b1ghw = sample_block_mask(1, patch_size, block_size, 0.5, gen)
    method.zero_grad(set_to_none=True)
    method(x_bcdhw, mask_b1ghw).loss.backward()
    frozen = []
    for name, p in method.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
    method.zero_grad(set_to_none=True)
    return frozen


class Pretrainer:
    """Builds model, optimiser and loaders from a :class:`PretrainConfig` and runs the epochs."""

    def __init__(self, cfg: PretrainConfig, out_dir: str | Path, dist: DistInfo | None = None) -> None:
        self.cfg = cfg
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        self.out_dir = Path(out_dir)
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.patch_size = tuple(cfg.loader.patch_size)
        self.arch = resolve(cfg.model)
        # configuration errors surface before any data is touched
        check_patch_size(self.arch, self.patch_size, cfg.method.mask.block_size)
        mask_grid_shape(self.patch_size, cfg.method.mask.block_size)
        SCHEDULES.get(cfg.optim.schedule)
        self.local_batch = split_batch(cfg.loader.batch_size, self.dist)

        self.corpus = PreprocessedCorpus(cfg.data.corpus)
        flt = cfg.data.filter
        case_ids = [c for c in self.corpus.case_ids if flt.matches_record(self.corpus.properties(c)) is None]
        if not case_ids:
            total = len(self.corpus)
            why = "it has no finished cases" if total == 0 else f"all {total} cases were filtered out"
            raise ValueError(f"{cfg.data.corpus}: nothing to train on ({why})")
        #: defaced voxels (anonymisation masks) are zeroed in the input and left out of the loss when
        #: the selected cases have such masks and data.exclude_defaced is on
        self.exclude_defaced = cfg.data.exclude_defaced and any(
            DEFACING_MASK in self.corpus.properties(c).get("masks", []) for c in case_ids)
        masks = tuple(cfg.loader.masks)
        if self.exclude_defaced and DEFACING_MASK not in masks:
            masks = (*masks, DEFACING_MASK)
        # the loader config of this rank: its share of the global batch
        self.loader_cfg = dataclasses.replace(cfg.loader, batch_size=self.local_batch, masks=masks,
                                              val_batch_size=cfg.loader.val_batch_size or self.local_batch)
        self.train_ids, self.val_ids = split_corpus(self.corpus, case_ids, cfg.loader.val_fraction,
                                                    seed=cfg.train.seed)

        torch.manual_seed(_seed(cfg.train.seed, 0))  # identical initial weights on every rank
        network = build_network(self.arch, in_channels=1, out_channels=1)  # initialised per arch.init
        method_cls = METHODS.get(cfg.method.name)
        method_cfg = from_dict(method_cls.Config, cfg.method.options, prefix="method.options.")
        self.method: SSLMethod = build_method(cfg.method.name, network, method_cfg).to(self.device)
        frozen = freeze_unused_parameters(self.method, self.patch_size, cfg.method.mask.block_size)
        if frozen and self.dist.is_main:
            log.info("parameters unused in this configuration (no gradient, not optimised): %s",
                     ", ".join(frozen))
        self.params = [p for p in self.method.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                         weight_decay=o.weight_decay)
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.model: nn.Module = self.method
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        if self.dist.enabled:
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.epoch = 0  # next epoch to run
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False

    # ------------------------------------------------------------------ set-up helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _mask_generator(self, *parts: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(_seed(self.cfg.train.seed, *parts))
        return g

    def _sample_mask(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        m = self.cfg.method.mask
        ratio = tuple(m.ratio) if isinstance(m.ratio, (list, tuple)) else m.ratio
        return sample_block_mask(batch, self.patch_size, m.block_size, ratio, gen)

    def _defaced(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The batch's defacing mask (non-zero = defaced) when defaced voxels are excluded, else None."""
        return batch[DEFACED_KEY].to(self.device, non_blocking=True) if self.exclude_defaced else None

    # ------------------------------------------------------------------ checkpoints
    def _pretrain_info(self) -> dict[str, Any]:
        plan = self.corpus.plan
        return {
            "method": self.cfg.method.name,
            "method_config": to_dict(self.method.cfg),
            "spacing": plan.get("target_spacing"),
            "patch_size": list(self.patch_size),
            "normalization": plan.get("normalization", "zscore"),
            "orientation": plan.get("orientation", "RAS"),
            "in_channels": 1,
            "num_output_channels": 1,
            "mask": to_dict(self.cfg.method.mask),
            "seed": self.cfg.train.seed,  # the run's one seed (weights, masks, data stream, split)
            "exclude_defaced": self.exclude_defaced,
        }

    def _checkpoint(self, *, training_state: bool) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if training_state:
            state = {
                "optimizer_state": self.optimizer.state_dict(),
                "grad_scaler_state": self.scaler.state_dict() if self.scaler else None,
                "epoch": self.epoch,
                "rng_state": capture_rng_state(),
                "loader_seed": self.cfg.train.seed,
                "logging": {"history": self.history},
                # the whole method (network + method-only parameters such as S3D mask tokens)
                "method_state": self.method.state_dict(),
            }
        return make_checkpoint(
            self.method.network.state_dict(),
            describe(self.arch, 1, 1),
            self._pretrain_info(),
            config=to_dict(self.cfg),
            provenance=provenance(),
            **state,
        )

    def resume(self, path: str | Path | None = None) -> None:
        """Restore model, optimiser, scaler, RNG states, history and epoch from a checkpoint."""
        path = Path(path) if path else self.out_dir / LATEST
        ckpt = load_checkpoint(path)
        if "optimizer_state" not in ckpt:
            raise ValueError(f"{path}: has no training state (an exported checkpoint cannot be resumed)")
        seed = ckpt.get("pretrain", {}).get("seed", ckpt.get("loader_seed"))
        if seed is not None and int(seed) != self.cfg.train.seed:
            raise ValueError(f"{path}: was trained with train.seed={seed}, this config has "
                             f"train.seed={self.cfg.train.seed}; resume with the run's own seed")
        self.method.load_state_dict(ckpt["method_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.scaler is not None and ckpt.get("grad_scaler_state"):
            self.scaler.load_state_dict(ckpt["grad_scaler_state"])
        restore_rng_state(ckpt["rng_state"])
        self.epoch = int(ckpt["epoch"])
        self.history = list(ckpt["logging"]["history"])
        if self.dist.is_main:
            log.info("resumed from %s at epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ one epoch
    def _train_batches(self) -> Iterator[dict[str, Any]]:
        """The run's one training-batch iterator, from the first batch of ``self.epoch`` on.

        One DataLoader serves every epoch (its workers start once); batch ``n`` is drawn with the seed
        ``(seed, rank, n)``, so a run resumed at epoch ``e`` continues with the very batches the
        uninterrupted run would have used.
        """
        loader = build_train_loader(self.corpus.root, self.train_ids, self.loader_cfg,
                                    seed=self.cfg.train.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size, device=self.device,
                                    start_batch=self.epoch * self.cfg.train.iterations_per_epoch)
        return iterate_batches(loader, self.loader_cfg, self.device)

    def _train_epoch(self, epoch: int, batches: Iterator[dict[str, Any]]) -> tuple[float, int]:
        cfg = self.cfg
        lr = lr_at(cfg.optim, epoch, cfg.train.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        gen = self._mask_generator(1, self.dist.rank, epoch)
        losses: list[float] = []
        n_bad = 0
        for step in range(cfg.train.iterations_per_epoch):
            batch = next(batches)
            x_bcdhw = batch["x"]
            mask_b1ghw = self._sample_mask(x_bcdhw.shape[0], gen)
            with self._autocast():
                loss = self.model(x_bcdhw, mask_b1ghw, self._defaced(batch)).loss
            if not torch.isfinite(loss):
                n_bad += 1
                if n_bad > cfg.train.nan_patience:
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch} step {step}; stopped, the last good checkpoint "
                        f"({self.out_dir / LATEST}) is kept")
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            losses.append(float(loss.detach()))
        mean = sum(losses) / len(losses) if losses else math.nan
        return mean, cfg.train.iterations_per_epoch * self.local_batch

    @torch.no_grad()
    def _validate(self, epoch: int, preview: Path | None) -> float:
        """Mean masked-reconstruction loss over ``train.val_iterations`` held-out batches.

        Patches (``ValPatchDataset``) and masks are the same in every epoch, so the values of two
        epochs differ only by the network.
        """
        if not self.val_ids:
            return math.nan
        self.model.eval()
        loader = build_val_loader(self.corpus.root, self.val_ids, self.loader_cfg, seed=self.cfg.train.seed,
                                  rank=self.dist.rank, world_size=self.dist.world_size,
                                  num_batches=self.cfg.train.val_iterations, device=self.device)
        gen = self._mask_generator(2, self.dist.rank)  # the same masks every epoch: comparable values
        total, count = 0.0, 0
        for i, batch in enumerate(loader):
            if self.cfg.train.val_iterations and i >= self.cfg.train.val_iterations:
                break
            x_bcdhw = batch["x"].to(self.device)
            mask_b1ghw = self._sample_mask(x_bcdhw.shape[0], gen)
            with self._autocast():
                out = self.method(x_bcdhw, mask_b1ghw, self._defaced(batch))
            total += float(out.loss) * x_bcdhw.shape[0]
            count += x_bcdhw.shape[0]
            if preview is not None and i == 0:
                visible = upsample_mask(mask_b1ghw[:1], x_bcdhw.shape[2:], x_bcdhw.dtype)
                save_preview(x_bcdhw[0], (x_bcdhw[:1] * visible)[0], out.reconstruction_bcdhw[0],
                             preview, title=f"epoch {epoch}")
        mean = total / max(count, 1)
        return all_reduce_mean(mean, self.dist)

    # ------------------------------------------------------------------ the run
    def _request_stop(self, signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping after the current epoch (a checkpoint will be written)", signum)
        self._stop_requested = True

    def run(self) -> Path:
        """Train from ``self.epoch`` to ``cfg.train.epochs``; returns the final checkpoint path."""
        cfg = self.cfg
        main = self.dist.is_main
        monitor = None
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.out_dir, cfg)
            monitor = Monitor(self.out_dir, tensorboard=cfg.train.tensorboard)
            log.info("pre-training %s/%s on %d train + %d val cases, %d epochs x %d iterations, batch %d",
                     cfg.method.name, self.arch.name, len(self.train_ids), len(self.val_ids),
                     cfg.train.epochs, cfg.train.iterations_per_epoch, cfg.loader.batch_size)
        old_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGUSR1, signal.SIGTERM)}
        progress = None
        batches: Iterator[dict[str, Any]] | None = None
        if main and not cfg.train.quiet:
            from tqdm import tqdm

            progress = tqdm(total=cfg.train.epochs, initial=self.epoch, unit="epoch", dynamic_ncols=True)
        try:
            if not self.history:
                # the untrained model's validation loss: the baseline that training has to beat
                self.history.append({"epoch": 0, "train_loss": math.nan, "val_loss": self._validate(-1, None),
                                     "lr": math.nan, "epoch_time_s": math.nan, "samples_per_s": math.nan})
                if monitor is not None:
                    monitor.log_epoch(self.history)
            while self.epoch < cfg.train.epochs:
                epoch = self.epoch
                t0 = time.perf_counter()
                if batches is None:
                    batches = self._train_batches()
                train_loss, samples = self._train_epoch(epoch, batches)
                train_loss = all_reduce_mean(train_loss, self.dist)
                last = epoch == cfg.train.epochs - 1
                every = cfg.train.preview_every
                want_preview = main and (last or (every > 0 and (epoch + 1) % every == 0))
                preview = self.out_dir / "previews" / f"epoch_{epoch + 1:04d}.png" if want_preview else None
                val_loss = self._validate(epoch, preview)
                dt = time.perf_counter() - t0
                self.history.append({
                    "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                    "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": dt,
                    "samples_per_s": samples * self.dist.world_size / dt,
                })
                self.epoch = epoch + 1
                if main:
                    monitor.log_epoch(self.history)
                    if (self.epoch % cfg.checkpoint.every == 0 or self._stop_requested) and not last:
                        save_checkpoint(self.out_dir / LATEST, self._checkpoint(training_state=True),
                                        overwrite=True)
                    keep = cfg.checkpoint.keep_every
                    if keep and self.epoch % keep == 0:
                        save_checkpoint(self.out_dir / f"checkpoint_epoch_{self.epoch}.pth",
                                        self._checkpoint(training_state=False), overwrite=True)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
                if self._stop_requested:
                    break
        finally:
            if batches is not None:
                batches.close()  # shuts the DataLoader's workers down now, not at garbage collection
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if progress is not None:
                progress.close()
            if monitor is not None:
                monitor.close()
        final = self.out_dir / FINAL
        if main and self.epoch >= cfg.train.epochs:
            ckpt = self._checkpoint(training_state=True)
            save_checkpoint(final, ckpt, overwrite=True)
            write_json(self.out_dir / "adaptation_plan.json", adaptation_plan(ckpt))
            (self.out_dir / LATEST).unlink(missing_ok=True)
        return final
