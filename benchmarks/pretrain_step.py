"""Benchmark one pre-training step of S3D against the dense MAE (CPU, float32).

One step = fresh block mask -> method forward -> loss backward -> grad-norm clip 12 -> SGD step
(Nesterov, momentum 0.99, lr 1e-2, wd 3e-5: the paper's optimiser). Each (architecture, patch,
batch, method) runs in its own subprocess, so peak memory (``ru_maxrss``) is per configuration
and allocator state does not leak between configurations. The table reports the median step
time, the S3D/MAE time ratio (goal <= 1.15; the nnssl reference measured 1.2-1.4 on this kind of
machine) and peak RSS.

Usage::

    python benchmarks/pretrain_step.py            # full table (xs and s nets, 64^3 and 96^3)
    python benchmarks/pretrain_step.py --quick    # one small configuration, ~1 min
    python benchmarks/pretrain_step.py --configs resenc-l:64:2,resenc-l:96:1 --malloc tuned
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

#: default table: two model sizes x two patch sizes (batch sizes as in deps_speed.md / anchor_perf.md);
#: ResEnc-L (``--configs resenc-l:64:2,resenc-l:96:1``) takes 4-30 s per step on an idle 2-core machine
FULL = [("resenc-xs", 64, 2), ("resenc-xs", 96, 1), ("resenc-s", 64, 2), ("resenc-s", 96, 1)]
QUICK = [("resenc-xs", 64, 2)]
#: glibc settings from deps_speed.md that avoid mmap/munmap page faults for large activations
TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "10000000000",
    "MALLOC_TOP_PAD_": "1073741824",
}


@dataclass
class Result:
    arch: str
    patch: int
    batch: int
    method: str
    median_s: float
    min_s: float
    max_s: float
    cpu_median_s: float  #: process CPU time per step (all threads); less sensitive to other load
    peak_rss_mib: float
    build_rss_mib: float
    params: int


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(arch: str, patch: int, batch: int, method: str, warmup: int, steps: int, threads: int,
              block: int, ratio: float) -> Result:
    """Build the model and time ``steps`` training steps in this process."""
    import torch

    from mae3d.models import build_network, check_patch_size
    from mae3d.pretraining.masking import sample_block_mask
    from mae3d.pretraining.methods import build_method

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    check_patch_size(arch, patch, block)
    model = build_method(method, build_network(arch))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, patch, patch, patch)
    build_rss = _rss_mib()
    times, cpu = [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        mask = sample_block_mask(batch, patch, block, ratio, gen)
        opt.zero_grad(set_to_none=True)
        out = model(x, mask)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12.0)
        opt.step()
        out.loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Result(arch, patch, batch, method, statistics.median(times), min(times), max(times),
                  statistics.median(cpu), peak, build_rss, sum(p.numel() for p in model.parameters()))


def _spawn(cfg: tuple[str, int, int], method: str, args: argparse.Namespace) -> Result:
    arch, patch, batch = cfg
    cmd = [sys.executable, __file__, "--child", arch, str(patch), str(batch), method,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads),
           "--block", str(args.block), "--ratio", str(args.ratio)]
    env = dict(os.environ)
    if args.malloc == "tuned":
        env.update(TUNED_MALLOC)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{arch} {patch} bs{batch} {method} failed:\n{proc.stderr[-2000:]}")
    return Result(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _best(runs: list[Result]) -> Result:
    """Per metric, the best of the repeats (the one least disturbed by other load on the machine)."""
    r = min(runs, key=lambda r: r.median_s)
    return Result(r.arch, r.patch, r.batch, r.method, r.median_s, min(x.min_s for x in runs),
                  max(x.max_s for x in runs), min(x.cpu_median_s for x in runs),
                  min(x.peak_rss_mib for x in runs), r.build_rss_mib, r.params)


def _table(results: list[Result]) -> str:
    rows = ["| arch | patch | bs | MAE s/step [min-max] | S3D s/step [min-max] | **S3D/MAE time** "
            "| CPU s/step MAE / S3D | S3D/MAE CPU | peak RSS MAE / S3D (MiB) | S3D/MAE mem "
            "| params MAE / S3D |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_key: dict[tuple, dict[str, list[Result]]] = {}
    for r in results:
        by_key.setdefault((r.arch, r.patch, r.batch), {}).setdefault(r.method, []).append(r)
    for (arch, patch, batch), d in by_key.items():
        if "mae" not in d or "s3d" not in d:
            continue
        a, b = _best(d["mae"]), _best(d["s3d"])
        rows.append(
            f"| {arch} | {patch}^3 | {batch} | {a.median_s:.3f} [{a.min_s:.3f}-{a.max_s:.3f}] "
            f"| {b.median_s:.3f} [{b.min_s:.3f}-{b.max_s:.3f}] | **{b.median_s / a.median_s:.2f}** "
            f"| {a.cpu_median_s:.3f} / {b.cpu_median_s:.3f} | {b.cpu_median_s / a.cpu_median_s:.2f} "
            f"| {a.peak_rss_mib:.0f} / {b.peak_rss_mib:.0f} | {b.peak_rss_mib / a.peak_rss_mib:.2f} "
            f"| {a.params:,} / {b.params:,} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one small configuration, 1 warm-up + 3 steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block", type=int, default=16, help="mask block edge in voxels")
    p.add_argument("--ratio", type=float, default=0.75, help="mask ratio")
    p.add_argument("--malloc", choices=("default", "tuned"), default="default",
                   help="glibc malloc settings of the child processes")
    p.add_argument("--repeats", type=int, default=1, help="runs per (config, method), alternating methods")
    p.add_argument("--configs", help="comma-separated ARCH:PATCH:BATCH list replacing the default table")
    p.add_argument("--json", help="append one JSON line per run to this file")
    p.add_argument("--table", metavar="JSONL", help="only print the table of a previous --json file")
    p.add_argument("--child", nargs=4, metavar=("ARCH", "PATCH", "BS", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        arch, patch, batch, method = args.child
        r = run_child(arch, int(patch), int(batch), method, args.warmup, args.steps, args.threads,
                      args.block, args.ratio)
        print(json.dumps(asdict(r)))
        return 0
    if args.table:
        with open(args.table) as f:
            print(_table([Result(**json.loads(line)) for line in f if line.strip()]))
        return 0
    if args.quick:
        args.warmup, args.steps = 1, 3
    configs = QUICK if args.quick else FULL
    if args.configs:
        configs = [(a, int(p_), int(b)) for a, p_, b in (c.split(":") for c in args.configs.split(","))]
    results: list[Result] = []
    t0 = time.time()
    for cfg in configs:
        runs: dict[str, list[Result]] = {"mae": [], "s3d": []}
        for _ in range(args.repeats):
            for method in ("mae", "s3d"):
                r = _spawn(cfg, method, args)
                runs[method].append(r)
                print(f"  {r.arch} {r.patch}^3 bs{r.batch} {r.method}: {r.median_s:.3f} s/step "
                      f"(CPU {r.cpu_median_s:.3f} s), peak {r.peak_rss_mib:.0f} MiB", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(asdict(r)) + "\n")
        for rs in runs.values():
            results.extend(rs)
    print(f"\nfp32 CPU, {args.threads} threads, malloc={args.malloc}, block {args.block}, "
          f"ratio {args.ratio}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} repeat(s); "
          f"total {time.time() - t0:.0f} s\n")
    print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
