"""``mae3d pretrain CORPUS OUT``: masked-image-modelling pre-training (single process or torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mae3d.cli.common import add_config_args, config_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pre-train a ResEnc U-Net by MAE / S3D on a prepared corpus",
        description="Pre-train on a corpus prepared by `mae3d prepare`. Defaults are the paper's "
                    "(ResEnc-L, S3D, 160^3, batch 6, SGD 1e-2 poly, 1000x250). Multi-GPU/multi-node: "
                    "launch the same command with torchrun (see docs/pretraining.md).")
    p.add_argument("corpus", help="prepared corpus folder (output of mae3d prepare)")
    p.add_argument("out", help="run folder")
    p.add_argument("--method", help="pre-training method (mae, s3d)")
    p.add_argument("--arch", help="architecture preset (resenc-l, resenc-s, resenc-xs)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int, help="iterations per epoch")
    p.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--workers", type=int, help="data-loading processes per process")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"),
                   help="continue the run in OUT from its last checkpoint; 'auto': only if there is one "
                        "(for re-submitted cluster jobs)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mae3d.pretraining.api import pretrain
    from mae3d.pretraining.config import PretrainConfig

    run_config = Path(args.out) / "config.json"
    resume = {"yes": True, "auto": "auto", None: False}[args.resume]
    if resume and args.config is None and run_config.is_file():
        args.config = str(run_config)  # continue with the run's own configuration (+ any --set)
    cfg = config_from_args(
        PretrainConfig, args,
        **{"data.corpus": args.corpus, "method.name": args.method, "model.name": args.arch,
           "train.epochs": args.epochs, "train.iterations_per_epoch": args.iterations,
           "loader.batch_size": args.batch_size, "loader.patch_size": args.patch_size,
           "loader.workers": args.workers, "train.device": args.device},
    )
    final = pretrain(cfg, args.out, resume=resume)
    print(f"checkpoint: {final}")
    return 0
