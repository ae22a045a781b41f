"""Real torch.distributed (gloo, 2 CPU processes): DDP gradients equal single-process gradients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mae3d.models import build_network
from mae3d.pretraining.distributed import DistInfo, split_batch
from mae3d.pretraining.masking import sample_block_mask
from mae3d.pretraining.methods import build_method
from mae3d.pretraining.trainer import freeze_unused_parameters

PATCH = (32, 32, 32)
GLOBAL_BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x_bcdhw = torch.randn(GLOBAL_BATCH, 1, *PATCH, generator=g)
    mask_b1ghw = sample_block_mask(GLOBAL_BATCH, PATCH, 8, 0.75, g)  # equal masked count per sample
    return x_bcdhw, mask_b1ghw


def _method():
    torch.manual_seed(0)
    method = build_method("s3d", build_network("resenc-xs", 1, 1))
    frozen = freeze_unused_parameters(method, PATCH, 8)  # as the trainer does
    # resenc-xs at 32^3 has a 2^3 bottleneck, coarser than the 4^3 mask grid: dense, no token used
    assert "mask_tokens.4" in frozen and any(n.startswith("network.decoder.seg_layers.0") for n in frozen)
    return method


def _grads(method) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.requires_grad}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world)
        local = split_batch(GLOBAL_BATCH, info)
        x_bcdhw, mask_b1ghw = _inputs()
        sl = slice(rank * local, (rank + 1) * local)
        model = DistributedDataParallel(_method())
        model(x_bcdhw[sl], mask_b1ghw[sl]).loss.backward()
        if rank == 0:
            torch.save(_grads(model.module), out)
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_single_process(tmp_path):
    out = tmp_path / "ddp_grads.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    ddp = torch.load(out, weights_only=True)

    method = _method()
    x_bcdhw, mask_b1ghw = _inputs()
    method(x_bcdhw, mask_b1ghw).loss.backward()
    single = _grads(method)
    assert ddp.keys() == single.keys()
    for name, g in single.items():
        torch.testing.assert_close(ddp[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_split_batch_requires_even_split():
    with pytest.raises(ValueError, match="not divisible"):
        split_batch(5, DistInfo(rank=0, world_size=2))


@pytest.mark.slow
def test_torchrun_two_processes_end_to_end(prepared_corpus, tmp_path):
    """The same ``mae3d pretrain`` command under torchrun with 2 gloo processes; only rank 0 writes."""
    run = tmp_path / "run"
    sets = ["model.name=resenc-xs", "method.mask.block_size=8", "loader.patch_size=[32, 32, 32]",
            "loader.batch_size=4", "loader.workers=0", "loader.val_fraction=0.3", "train.epochs=2",
            "train.iterations_per_epoch=2", "train.val_iterations=2", "train.quiet=true",
            "train.tensorboard=false", "train.device=cpu", "train.num_threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mae3d.cli.main", "pretrain", str(prepared_corpus), str(run),
           *[f"--set={s}" for s in sets]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(run / "checkpoint_final.pth", weights_only=True)
    assert ckpt["epoch"] == 2
    assert (run / "adaptation_plan.json").is_file()
    assert sorted(p.name for p in Path(run).glob("*.pth")) == ["checkpoint_final.pth"]
