"""``mae3d finetune``: fine-tune nnU-Net v2 on a raw dataset from a pre-trained checkpoint (or not)."""

from __future__ import annotations

import argparse

from mae3d.cli.common import add_config_args, config_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune``."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune nnU-Net v2 on an nnU-Net raw dataset",
        description=("Plan the dataset like the pre-training (spacing, z-score, patch, architecture), "
                     "preprocess it with nnU-Net and train nnU-Net's loop with the checkpoint's stem + "
                     "encoder loaded. Baselines: --from-scratch (same fixed plans, no weights) and "
                     "--plans dynamic (nnU-Net's own ResEnc plans, no checkpoint)."))
    p.add_argument("dataset", metavar="DATASET", help="nnU-Net raw dataset folder .../DatasetXXX_Name")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="pre-trained checkpoint (mae3d, or nnssl/OpenMind file or folder)")
    p.add_argument("--schedule", help="warmup (default), sawtooth, frozen, linear-probe, poly, none")
    p.add_argument("--fold", help="0..4 (nnU-Net's 5-fold split) or all")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--from-scratch", action="store_true", default=None,
                   help="use the checkpoint's plans but not its weights (the fixed baseline)")
    p.add_argument("--plans", choices=("fixed", "dynamic"),
                   help="fixed: like the checkpoint (default); dynamic: nnU-Net's own plans, from scratch")
    p.add_argument("-o", "--output", default="finetune_out", metavar="OUT",
                   help="output root (model folders + nnUNet_preprocessed); default ./finetune_out")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume the fold from its latest checkpoint (a finished run is only re-validated)")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mae3d.finetuning import FinetuneConfig, finetune

    fold = int(args.fold) if args.fold is not None and args.fold.isdigit() else args.fold
    cfg = config_from_args(FinetuneConfig, args, **{"schedule.name": args.schedule, "fold": fold,
                                                    "device": args.device, "from_scratch": args.from_scratch,
                                                    "plans": args.plans})
    model_dir = finetune(args.dataset, args.checkpoint, args.output, cfg, resume=args.resume)
    print(f"model folder: {model_dir} (fold_{cfg.fold})")
    return 0
