"""Which files are volumes: supported endings and splitting a file name into stem and ending.

Headers are read with ``mae3d.io.volumes.read_header`` (nibabel for NIfTI, SimpleITK's
``ReadImageInformation`` for the rest; no voxel data is loaded), so the corpus stage and
preprocessing agree on what a usable volume is.
"""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS", "split_image_name"]

# Longest first so ".nii.gz" wins. ".raw"/".zraw" (the voxel files of ".mhd"/".nhdr" headers) are
# deliberately absent: they are not images on their own.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def split_image_name(name: str) -> tuple[str, str] | None:
    """Split a file name into ``(stem, ending)`` if it is a supported volume, else None.

    The match is case-insensitive; the ending is returned as written.
    """
    low = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    return None
