"""``mae3d corpus``: build a corpus manifest (``build``) and check what it holds (``info``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mae3d.corpus.build import BUILDERS, build_manifest
from mae3d.corpus.info import summarize
from mae3d.corpus.manifest import load_manifest, save_manifest

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``corpus build`` and ``corpus info``."""
    parser = subparsers.add_parser("corpus", help="build or inspect a corpus manifest",
                                   description="Build or inspect a corpus manifest (manifest.json).")
    actions = parser.add_subparsers(dest="corpus_action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="write a manifest of a folder, nnssl json or nnU-Net dataset")
    build.add_argument("--from", dest="kind", required=True, choices=BUILDERS.names(),
                       help="source kind: folder (BIDS or any tree of volumes), nnssl (pretrain_data.json), "
                            "nnunet (DatasetXXX_Name raw folder)")
    build.add_argument("source", metavar="SRC", help="the folder or json to describe")
    build.add_argument("-o", "--output", required=True, metavar="MANIFEST", help="manifest file to write")
    build.add_argument("--name", help="collection name (default: from the source)")
    build.add_argument("--relative", action="store_true",
                       help="store paths relative to the manifest's folder (default: absolute)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    build.set_defaults(func=_build)

    info = actions.add_parser("info", help="counts, voxels, missing files and duplicates of a manifest")
    info.add_argument("manifest", metavar="MANIFEST")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--no-headers", action="store_true", help="do not read image headers (no voxel counts)")
    info.add_argument("--env", action="append", default=[], metavar="VAR=PATH",
                      help="folder for $VAR paths, e.g. nnssl_raw=/data/raw (repeatable)")
    info.add_argument("--strict", action="store_true",
                      help="exit with status 1 if a file is missing or unreadable or an image is duplicated")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    relative_to = os.path.abspath(out.parent) if args.relative else None
    manifest = build_manifest(args.kind, args.source, collection_name=args.name, relative_to=relative_to)
    save_manifest(manifest, out, overwrite=args.overwrite)
    # counted from the structure: listing records would resolve $VAR paths, which building does not need
    n = sum(len(ses.images) for ds in manifest.collection.datasets.values()
            for sub in ds.subjects.values() for ses in sub.sessions.values())
    print(f"wrote {out}: {len(manifest.collection.datasets)} datasets, {n} images")
    return 0


def _parse_env(items: list[str]) -> dict[str, str] | None:
    env = {}
    for item in items:
        var, sep, value = item.partition("=")
        if not sep or not var:
            raise ValueError(f"--env {item!r}: expected VAR=PATH")
        env[var] = value
    return env or None


def _info(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    manifest.env = _parse_env(args.env)
    summary = summarize(manifest, read_headers=not args.no_headers)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.format(), end="")
    return 1 if args.strict and not summary.ok else 0
