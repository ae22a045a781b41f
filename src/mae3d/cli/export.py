"""``mae3d export CKPT --to {nnssl,nnunet} OUT``: write a pre-trained checkpoint in another format."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export``."""
    p = subparsers.add_parser(
        "export", help="export a pre-trained checkpoint for nnssl / OpenMind or plain nnU-Net v2",
        description=("Write CKPT (a mae3d checkpoint, or an nnssl/OpenMind file or folder) as "
                     "(nnssl) a folder OUT with checkpoint_final.pth + adaptation_plan.json, or "
                     "(nnunet) a full network state dict OUT for "
                     "'nnUNetv2_train ... -pretrained_weights OUT' (the nnU-Net plans must use the "
                     "checkpoint's architecture). Training state is dropped; an existing OUT is never "
                     "replaced."))
    p.add_argument("checkpoint", metavar="CKPT", help="pre-trained checkpoint file (or nnssl model folder)")
    p.add_argument("--to", required=True, choices=("nnssl", "nnunet"), help="target format")
    p.add_argument("output", metavar="OUT", help="output folder (nnssl) or .pth file (nnunet)")
    p.add_argument("--input-channels", type=int, metavar="C",
                   help="nnunet only: downstream image channels (the stem is repeated over C, divided by C)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mae3d.transfer import export_nnssl, export_nnunet, read_pretrained

    if args.to == "nnssl" and args.input_channels is not None:
        raise ValueError("--input-channels applies to --to nnunet only (nnssl checkpoints keep the "
                         "pre-training channels; adaptation happens when fine-tuning)")
    if args.input_channels is not None and args.input_channels < 1:
        raise ValueError(f"--input-channels must be >= 1, got {args.input_channels}")
    ckpt = read_pretrained(args.checkpoint)
    if args.to == "nnssl":
        out = export_nnssl(ckpt, args.output)
        print(f"wrote {out}/checkpoint_final.pth and {out}/adaptation_plan.json (nnssl format)")
    else:
        out = export_nnunet(ckpt, args.output, input_channels=args.input_channels)
        print(f"wrote {out}; use it with: nnUNetv2_train DATASET 3d_fullres FOLD -pretrained_weights {out} "
              "(plans with the checkpoint's architecture)")
    return 0
