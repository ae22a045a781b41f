"""One entry point over the manifest builders, chosen by name (``folder``, ``nnssl``, ``nnunet``).

The CLI and configs name a source kind; each builder takes the source path and the keywords
``collection_name`` and ``relative_to`` (the folder the manifest will be saved in).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mae3d.corpus.from_folder import build_from_folder
from mae3d.corpus.from_nnunet_raw import build_from_nnunet_raw
from mae3d.corpus.manifest import Manifest
from mae3d.corpus.nnssl_json import build_from_nnssl_json
from mae3d.utils.registry import Registry

__all__ = ["BUILDERS", "build_manifest"]

Builder = Callable[..., Manifest]

BUILDERS: Registry[Builder] = Registry("corpus source")
BUILDERS.add("folder", build_from_folder)
BUILDERS.add("nnssl", build_from_nnssl_json)
BUILDERS.add("nnunet", build_from_nnunet_raw)


def build_manifest(kind: str, source: str | os.PathLike, *, collection_name: str | None = None,
                   relative_to: str | os.PathLike | None = None) -> Manifest:
    """Build a manifest from ``source`` with the builder registered as ``kind``.

    Raises:
        KeyError: unknown ``kind`` (the message lists the valid ones).
    """
    return BUILDERS.get(kind)(source, collection_name=collection_name, relative_to=relative_to)
