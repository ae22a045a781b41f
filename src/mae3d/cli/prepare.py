"""``mae3d prepare MANIFEST OUT``: fingerprint, plan and preprocess a corpus into blosc2 files."""

from __future__ import annotations

import argparse

from mae3d.cli.common import add_config_args, config_from_args
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.runner import prepare

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` sub-command."""
    p = subparsers.add_parser(
        "prepare", help="preprocess a corpus manifest for pre-training (blosc2)",
        description="Read every image of MANIFEST in nnU-Net's array order (SimpleITK's, no reorientation), "
                    "crop to the non-zero region, z-score, resample and store it under OUT/cases as "
                    "blosc2, with plan.json, fingerprint.json and a report. Resumable: finished cases "
                    "are kept unless --overwrite.")
    p.add_argument("manifest", metavar="MANIFEST", help="corpus manifest (mae3d corpus build)")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores; 0 or 1: no pool)")
    p.add_argument("--part", type=int, help="process part i (0-based) of --parts n (split across machines)")
    p.add_argument("--parts", type=int, help="number of parts (default 1)")
    sp = p.add_mutually_exclusive_group()
    sp.add_argument("--spacing", type=float, nargs=3, metavar=("S0", "S1", "S2"),
                    help="target spacing in mm per array axis (SimpleITK/nnU-Net array order; default 1 1 1)")
    sp.add_argument("--spacing-mode", choices=("fixed", "median", "none"),
                    help="median: corpus median spacing; none: keep each image's spacing")
    p.add_argument("--normalization", choices=("zscore", "zscore-nonzero"),
                   help="z-score over the whole cropped box (default, as nnssl) or the non-zero region only")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="redo finished cases and replace a differing plan")
    p.add_argument("--strict", action="store_true", default=None,
                   help="exit with status 1 if any image was skipped as bad input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    direct = {"workers": args.workers, "part": args.part, "parts": args.parts,
              "spacing_mode": args.spacing_mode, "overwrite": args.overwrite, "strict": args.strict,
              "normalization": args.normalization}
    if args.spacing is not None:
        direct.update(spacing_mode="fixed", target_spacing=list(args.spacing))
    cfg = config_from_args(PrepareConfig, args, **direct)
    report = prepare(args.manifest, args.out, cfg, progress=not args.no_progress)
    print(report.summary())
    return 1 if (cfg.strict and not report.ok) else 0
