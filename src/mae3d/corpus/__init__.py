"""Corpus manifests: schema, builders (folder/BIDS, nnssl json, nnU-Net raw), filters, summaries.

The submodules hold the API; the most used names are re-exported here.
"""

from __future__ import annotations

from mae3d.corpus.build import BUILDERS, build_manifest
from mae3d.corpus.duplicates import DuplicateGroup, dedupe, find_duplicates
from mae3d.corpus.filters import CorpusFilter
from mae3d.corpus.from_folder import build_from_folder
from mae3d.corpus.from_nnunet_raw import build_from_nnunet_raw
from mae3d.corpus.info import CorpusSummary, summarize
from mae3d.corpus.manifest import (
    ImageEntry,
    ImageRecord,
    Manifest,
    ManifestError,
    load_manifest,
    save_manifest,
)
from mae3d.corpus.nnssl_json import build_from_nnssl_json, to_nnssl_json

__all__ = [
    "BUILDERS",
    "CorpusFilter",
    "CorpusSummary",
    "DuplicateGroup",
    "ImageEntry",
    "ImageRecord",
    "Manifest",
    "ManifestError",
    "build_from_folder",
    "build_from_nnssl_json",
    "build_from_nnunet_raw",
    "build_manifest",
    "dedupe",
    "find_duplicates",
    "load_manifest",
    "save_manifest",
    "summarize",
    "to_nnssl_json",
]
