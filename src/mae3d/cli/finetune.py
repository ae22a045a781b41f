"""``mae3d finetune``: fine-tune nnU-Net v2 on a raw dataset from a pre-trained checkpoint (or not)."""

from __future__ import annotations

import argparse

from mae3d.cli.common import add_config_args, config_from_args
from mae3d.config import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune``."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune nnU-Net v2 on an nnU-Net raw dataset",
        description=("Plan the dataset like the pre-training (spacing, z-score, patch, architecture), "
                     "preprocess it with nnU-Net and train nnU-Net's loop with the checkpoint's stem + "
                     "encoder loaded. Baselines: --baseline fixed (same fixed plans and settings, no "
                     "weights, lr 1e-2) and --baseline dynamic (nnU-Net's own ResEnc plans and default "
                     "trainer settings, no checkpoint)."))
    p.add_argument("dataset", metavar="DATASET", help="nnU-Net raw dataset folder .../DatasetXXX_Name")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="pre-trained checkpoint (mae3d, or nnssl/OpenMind file or folder)")
    p.add_argument("--schedule", help="sawtooth (default with a checkpoint), warmup, frozen, linear-probe, "
                                      "poly (default for --baseline dynamic), none")
    p.add_argument("--fold", help="0..4 (nnU-Net's 5-fold split) or all")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--baseline", choices=("none", "fixed", "dynamic"),
                   help="none: fine-tune the checkpoint (default); fixed: its plans without its weights; "
                        "dynamic: nnU-Net's own plans and trainer defaults, no checkpoint")
    p.add_argument("--from-scratch", action="store_true", default=None,
                   help="same as --baseline fixed")
    p.add_argument("--plans", choices=("fixed", "dynamic"),
                   help="--plans dynamic is the same as --baseline dynamic; fixed is the default")
    p.add_argument("-o", "--output", default="finetune_out", metavar="OUT",
                   help="output root (model folders + nnUNet_preprocessed); default ./finetune_out")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume the fold from its latest checkpoint (a finished run is only re-validated)")
    add_config_args(p)
    p.set_defaults(func=_run)


def _baseline(args: argparse.Namespace) -> str | None:
    """``--baseline``, or its older spellings ``--from-scratch`` / ``--plans dynamic`` (None: not given)."""
    older = (("fixed", args.from_scratch), ("dynamic", args.plans == "dynamic"))
    implied = {b for b, given in older if given}
    if args.baseline is not None:
        if implied - {args.baseline}:
            raise ConfigError(f"--baseline {args.baseline} contradicts "
                             f"{'--from-scratch' if args.from_scratch else '--plans dynamic'}")
        return args.baseline
    if len(implied) > 1:
        raise ConfigError("--from-scratch (fixed baseline) and --plans dynamic (dynamic "
                         "baseline) are two different baselines; pick one with --baseline")
    return next(iter(implied), None)


def _run(args: argparse.Namespace) -> int:
    from mae3d.finetuning import FinetuneConfig, finetune

    fold = int(args.fold) if args.fold is not None and args.fold.isdigit() else args.fold
    cfg = config_from_args(FinetuneConfig, args, **{"schedule.name": args.schedule, "fold": fold,
                                                    "device": args.device, "baseline": _baseline(args)})
    model_dir = finetune(args.dataset, args.checkpoint, args.output, cfg, resume=args.resume)
    print(f"model folder: {model_dir} (fold_{cfg.fold})")
    return 0
