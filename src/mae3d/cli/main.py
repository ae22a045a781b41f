"""``mae3d`` console script: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mae3d import __version__
from mae3d.config import ConfigError

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
COMMANDS: tuple[str, ...] = (
    "corpus",
    "prepare",
    "data",
    "pretrain",
    "finetune",
    "predict",
    "evaluate",
    "export",
    "benchmark",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mae3d",
        description="MAE / Spark-3D pre-training of 3D CNNs and transfer into nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"mae3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mae3d.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # nibabel logs header fix-ups (e.g. "pixdim[0] (qfac) should be 1") at INFO through its own handler
    # *and* the root one: every line twice, for something it already repaired. Keep its warnings only.
    logging.getLogger("nibabel").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        # expected user errors: one clear line, no traceback (use -v for one)
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mae3d {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
