"""The pre-trained checkpoint as fine-tuning sees it: its plans-relevant facts and its provenance.

Reading and weight loading are :mod:`mae3d.transfer`'s (``read_pretrained`` accepts mae3d and
nnssl/OpenMind checkpoints, ``transfer_weights`` loads stem + encoder with channel adaptation); this
module adds the file hash and the checkpoint's axis convention as planning needs it.

Axis convention: a checkpoint's ``spacing`` and ``patch_size`` are listed in the axis order of its
pre-training arrays, which is SimpleITK's array order of each file (what nnU-Net reads) transposed
by ``transpose_forward`` (absent = identity: every mae3d checkpoint; nnssl plans may carry another
one). Fine-tuning plans use the same ``transpose_forward``, so nnU-Net's preprocessed arrays have
the axes the encoder was pre-trained on and the values are taken as they are. Checkpoints of older
mae3d versions (``orientation`` ``"RAS"``) were pre-trained on arrays reoriented to RAS, an order
nnU-Net never produces; :meth:`PretrainedCheckpoint.legacy_ras` flags them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LEGACY_ORIENTATION", "PretrainedCheckpoint", "file_sha256", "read_checkpoint"]

#: ``pretrain.orientation`` of checkpoints pre-trained on RAS-reoriented arrays (plan schema 1)
LEGACY_ORIENTATION = "RAS"
# pre-training normalisation -> nnU-Net's use_mask_for_norm for ZScoreNormalization
_MASK_FOR_NORM = {"zscore": False, "zscore-nonzero": True}


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

    @property
    def transpose_forward(self) -> list[int]:
        """Axis order of the pre-training arrays relative to SimpleITK's array order (identity for mae3d)."""
        return [int(a) for a in self.pretrain.get("transpose_forward") or (0, 1, 2)]

    @property
    def legacy_ras(self) -> bool:
        """True for checkpoints pre-trained on RAS-reoriented arrays (mae3d plan schema 1)."""
        return self.pretrain.get("orientation") == LEGACY_ORIENTATION

    def spacing(self) -> list[float]:
        """Pre-training spacing in the pre-training arrays' axis order (= the plans' order)."""
        return [float(s) for s in self.pretrain["spacing"]]

    def downstream_patch(self) -> tuple[int, int, int]:
        """Recommended downstream patch (pre-training axis order); the pre-training patch when none."""
        pre = self.pretrain
        patch = pre.get("recommended_downstream_patch_size") or pre["patch_size"]
        return tuple(int(p) for p in patch)  # type: ignore[return-value]

    def normalization_name(self) -> str:
        """The pre-training normalisation as a name (``zscore``, ``zscore-nonzero`` ...)."""
        norm = self.pretrain.get("normalization")
        if isinstance(norm, dict):
            norm = norm.get("scheme", norm.get("name"))
        return str(norm).lower() if norm is not None else "zscore"

    def use_mask_for_norm(self) -> bool:
        """nnU-Net's ``use_mask_for_norm`` matching the pre-training z-score.

        ``zscore`` (whole cropped box; nnssl's and mae3d's default) -> False; ``zscore-nonzero``
        (non-zero region only, 0 outside) -> True. Raises ``ValueError`` for other schemes.
        """
        name = self.normalization_name()
        if name not in _MASK_FOR_NORM:
            raise ValueError(f"{self.path}: pre-training normalization {name!r} is not a z-score "
                             f"({', '.join(_MASK_FOR_NORM)}); use normalization='nnunet' for fine-tuning")
        return _MASK_FOR_NORM[name]

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
            # spacing / patches in the pre-training arrays' axis order (see the module docstring)
            "spacing": self.spacing(),
            "patch_size": [int(p) for p in pre["patch_size"]],
            "recommended_downstream_patch": list(self.downstream_patch()),
            "transpose_forward": self.transpose_forward,
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
