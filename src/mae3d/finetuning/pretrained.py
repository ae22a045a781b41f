"""The pre-trained checkpoint as fine-tuning sees it: its plans-relevant facts and its provenance.

Reading and weight loading are :mod:`mae3d.transfer`'s (``read_pretrained`` accepts mae3d and
nnssl/OpenMind checkpoints, ``transfer_weights`` loads stem + encoder with channel adaptation); this
module only adds the file hash and the conversions to nnU-Net's axis order that planning needs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PretrainedCheckpoint", "file_sha256", "read_checkpoint"]


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies the exact weights in plans and reports)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """A loaded mae3d checkpoint dict plus where it came from."""

    path: Path
    sha256: str
    ckpt: dict[str, Any]

    @property
    def architecture(self) -> dict[str, Any]:
        return self.ckpt["architecture"]

    @property
    def pretrain(self) -> dict[str, Any]:
        return self.ckpt["pretrain"]

    @property
    def keys(self) -> dict[str, Any]:
        return self.ckpt["keys"]

    @property
    def in_channels(self) -> int:
        return int(self.pretrain["in_channels"])

    def downstream_patch_xyz(self) -> tuple[int, int, int]:
        """Recommended downstream patch (x, y, z); the pre-training patch when none is recommended."""
        pre = self.pretrain
        patch = pre.get("recommended_downstream_patch_size") or pre["patch_size"]
        return tuple(int(p) for p in patch)  # type: ignore[return-value]

    def tag(self) -> str:
        """Short name for plans / folder names: sanitised file stem + 8 hex digits of the hash."""
        stem = re.sub(r"[^A-Za-z0-9-]+", "-", self.path.stem).strip("-")[:32] or "checkpoint"
        return f"{stem}-{self.sha256[:8]}"

    def provenance(self) -> dict[str, Any]:
        """What goes into the plans as ``mae3d_pretrain`` (JSON-serialisable)."""
        pre = self.pretrain
        return {
            "checkpoint": str(self.path.resolve()),
            "sha256": self.sha256,
            "method": pre.get("method"),
            "spacing_xyz": list(pre["spacing"]),
            "patch_size_xyz": list(pre["patch_size"]),
            "recommended_downstream_patch_xyz": list(self.downstream_patch_xyz()),
            "normalization": pre.get("normalization"),
            "orientation": pre.get("orientation"),
            "in_channels": self.in_channels,
            "keys": {"stem": self.keys["stem"], "encoder": self.keys["encoder"],
                     "in_proj": list(self.keys["in_proj"])},
        }


def read_checkpoint(path: str | Path) -> PretrainedCheckpoint:
    """Read ``path`` with :func:`mae3d.transfer.read_pretrained` (weights-only, validated)."""
    from mae3d.transfer import read_pretrained

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ckpt = read_pretrained(path)
    weights_file = path if path.is_file() else path / "checkpoint_final.pth"  # nnssl/OpenMind folder
    digest = (file_sha256(weights_file) if weights_file.is_file()
              else hashlib.sha256(str(path.resolve()).encode()).hexdigest())
    return PretrainedCheckpoint(path=path, sha256=digest, ckpt=dict(ckpt))
