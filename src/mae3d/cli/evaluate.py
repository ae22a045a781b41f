"""``mae3d evaluate PRED_DIR GT_DIR``: Dice / NSD / HD95 of a prediction folder against references."""

from __future__ import annotations

import argparse
from pathlib import Path

from mae3d.cli.common import add_config_args, config_from_args
from mae3d.config import write_run_config
from mae3d.evaluation.evaluate import EvaluationConfig, evaluate_folders, labels_from_dataset_json

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate", help="Dice / NSD / HD95 of predicted segmentations against references",
        description="Evaluate PRED_DIR against GT_DIR (files matched by name); writes summary.json and "
                    "metrics.csv (default into PRED_DIR) and prints a table.")
    p.add_argument("pred_dir", metavar="PRED_DIR", help="predicted segmentations")
    p.add_argument("gt_dir", metavar="GT_DIR", help="reference segmentations (same file names)")
    p.add_argument("--dataset-json", metavar="FILE",
                   help="nnU-Net dataset.json whose 'labels' name the classes "
                        "(default: every value found in GT_DIR)")
    p.add_argument("--tolerance", type=float, metavar="MM", help="NSD tolerance in mm (default 1.0)")
    p.add_argument("--file-ending", metavar="SUFFIX", help="file suffix (default .nii.gz)")
    p.add_argument("-j", "--num-workers", type=int, metavar="N", help="worker processes (default 1)")
    p.add_argument("--hd95-cap", type=float, metavar="MM",
                   help="HD95 used in means when one mask is empty (default: the image diagonal)")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder (default: PRED_DIR)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing summary.json / metrics.csv")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(EvaluationConfig, args, tolerance_mm=args.tolerance, file_ending=args.file_ending,
                           num_workers=args.num_workers, hd95_cap_mm=args.hd95_cap)
    labels = labels_from_dataset_json(args.dataset_json) if args.dataset_json else None
    out = Path(args.output) if args.output else Path(args.pred_dir)
    result = evaluate_folders(args.pred_dir, args.gt_dir, labels, tolerance_mm=cfg.tolerance_mm,
                              file_ending=cfg.file_ending, num_workers=cfg.num_workers,
                              hd95_cap_mm=cfg.hd95_cap_mm, output_dir=out, overwrite=args.overwrite)
    write_run_config(out, cfg, name="evaluation_config.json")
    print(result.format_summary())
    print(f"wrote {out / 'summary.json'} and {out / 'metrics.csv'}")
    return 0
