"""``mae3d predict``: segment a folder of images with a fine-tuned model folder."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    p = subparsers.add_parser(
        "predict", help="segment images with a fine-tuned model folder (nnU-Net sliding window)",
        description=("Predict CASE_0000.nii.gz-style images in INPUT with the model folder written by "
                     "'mae3d finetune' (folds are ensembled); writes CASE.nii.gz into OUTPUT."))
    p.add_argument("model_dir", metavar="MODEL_DIR", help=".../FinetuneTrainer__<plans>__3d_fullres")
    p.add_argument("input", metavar="INPUT", help="folder of images CASE_XXXX<ending>")
    p.add_argument("output", metavar="OUTPUT", help="folder for the segmentations")
    p.add_argument("--mirroring", action="store_true", help="test-time mirroring (8x slower in 3-D)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--folds", nargs="+", metavar="K", help="folds to ensemble (default: all trained folds)")
    p.add_argument("--checkpoint-name", default="checkpoint_final.pth")
    p.add_argument("--num-processes", type=int, default=1,
                   help="preprocessing/export processes (1 = in this process)")
    p.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mae3d.evaluation.predict import predict

    folds = [int(f) if f.isdigit() else f for f in args.folds] if args.folds else None
    out = predict(args.model_dir, args.input, args.output, mirroring=args.mirroring, device=args.device,
                  checkpoint_name=args.checkpoint_name, num_processes=args.num_processes, folds=folds,
                  overwrite=args.overwrite)
    print(f"predictions: {out}")
    return 0
