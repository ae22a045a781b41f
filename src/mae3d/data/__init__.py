"""Embedded real data: volumes shipped inside installed packages, a corpus manifest of them and
labelled nnU-Net v2 datasets built from them (nothing is downloaded at run time; docs/data.md)."""

from mae3d.data.corpus import EmbeddedCorpusConfig, build_embedded_corpus, embedded_manifest
from mae3d.data.nnunet_datasets import (
    DATASETS,
    NnunetDataConfig,
    build_nnunet_dataset,
    build_nnunet_datasets,
    dataset_folder_name,
)
from mae3d.data.sources import (
    SOURCES,
    EmbeddedFile,
    MissingDataError,
    available,
    get_source,
    locate,
    source_status,
)

__all__ = [
    "DATASETS",
    "SOURCES",
    "EmbeddedCorpusConfig",
    "EmbeddedFile",
    "MissingDataError",
    "NnunetDataConfig",
    "available",
    "build_embedded_corpus",
    "build_nnunet_dataset",
    "build_nnunet_datasets",
    "dataset_folder_name",
    "embedded_manifest",
    "get_source",
    "locate",
    "source_status",
]
