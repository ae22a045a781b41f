"""Architecture configuration: presets (ResEnc-L/S/XS) and the user-facing override dataclass.

A run names a preset (``ArchitectureConfig.name``) and may override any of its widths, depths,
strides, kernel sizes or decoder convs. :func:`resolve` merges the two into a fully specified,
validated :class:`ArchitectureSpec` that every builder in :mod:`mae3d.models` works from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mae3d.utils.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "ArchitectureConfig",
    "ArchitectureError",
    "ArchitectureSpec",
    "InitScheme",
    "resolve",
]

InitScheme = Literal["pytorch", "he"]
Triple = tuple[int, int, int]


class ArchitectureError(ValueError):
    """An architecture configuration or description is inconsistent, malformed or cannot be built (the
    message names the field or the file). The one architecture error of mae3d (``mae3d.transfer``
    re-exports it)."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """A fully specified 3D ResidualEncoderUNet (everything nnU-Net's ``arch_kwargs`` needs).

    Norm (InstanceNorm3d eps 1e-5, affine), nonlinearity (LeakyReLU, inplace) and "no dropout" are
    fixed: they are what nnU-Net's ResEnc planners and the paper use, and the S3D sparse path
    relies on them (see :mod:`mae3d.pretraining.sparse`).
    """

    name: str  # the preset it came from (overrides keep the preset's name)
    features: tuple[int, ...]
    blocks: tuple[int, ...]
    strides: tuple[Triple, ...]
    kernel_sizes: tuple[Triple, ...]
    decoder_convs: tuple[int, ...]
    conv_bias: bool = True
    init: InitScheme = "pytorch"

    @property
    def n_stages(self) -> int:
        return len(self.features)


# Presets are factories so that nobody can mutate a shared instance.
ARCHITECTURES: Registry[ArchitectureSpec] = Registry("architecture")


def _iso(values: Sequence[int]) -> tuple[Triple, ...]:
    return tuple((v, v, v) for v in values)


ARCHITECTURES.add(
    "resenc-l",
    # nnU-Net's ResEnc-L preset as used by the paper (nnssl get_res_enc_l): 102,348,965 params (1 in/1 out)
    ArchitectureSpec(
        name="resenc-l",
        features=(32, 64, 128, 256, 320, 320),
        blocks=(1, 3, 4, 6, 6, 6),
        strides=_iso((1, 2, 2, 2, 2, 2)),
        kernel_sizes=_iso((3,) * 6),
        decoder_convs=(1,) * 5,
    ),
)
ARCHITECTURES.add(
    "resenc-s",
    # small 5-stage ResEnc for quick experiments: 14,240,308 params (1 in/1 out)
    ArchitectureSpec(
        name="resenc-s",
        features=(16, 32, 64, 128, 256),
        blocks=(1, 2, 2, 3, 3),
        strides=_iso((1, 2, 2, 2, 2)),
        kernel_sizes=_iso((3,) * 5),
        decoder_convs=(1,) * 4,
    ),
)
ARCHITECTURES.add(
    "resenc-xs",
    # tiny 5-stage ResEnc for tests and smoke runs: 1,293,884 params (1 in/1 out)
    ArchitectureSpec(
        name="resenc-xs",
        features=(8, 16, 32, 64, 64),
        blocks=(1, 1, 2, 2, 2),
        strides=_iso((1, 2, 2, 2, 2)),
        kernel_sizes=_iso((3,) * 5),
        decoder_convs=(1,) * 4,
    ),
)


@dataclass
class ArchitectureConfig:
    """Which network to pre-train: a preset name plus optional overrides (``None`` = the preset's).

    Strides and kernel sizes are given per stage, either as one int (isotropic) or as ``[z, y, x]``.
    Overriding ``features`` with a different number of stages requires the other per-stage
    fields to be given as well.
    """

    name: str = "resenc-l"
    features: list[int] | None = None
    blocks: list[int] | None = None
    strides: list[int | list[int]] | None = None
    kernel_sizes: list[int | list[int]] | None = None
    decoder_convs: list[int] | None = None
    #: "pytorch": PyTorch default init (as nnssl pre-training); "he": nnU-Net's InitWeights_He(1e-2)
    #: plus zero-init of the last norm of every residual block.
    init: InitScheme = "pytorch"


def _triples(values: Sequence[int | Sequence[int]], field: str) -> tuple[Triple, ...]:
    out = []
    for i, v in enumerate(values):
        t = (v, v, v) if isinstance(v, int) else tuple(v)
        if len(t) != 3 or not all(isinstance(a, int) and a >= 1 for a in t):
            raise ArchitectureError(f"{field}[{i}]: expected a positive int or 3 positive ints, got {v!r}")
        out.append(t)
    return tuple(out)


def _positive(values: Sequence[int], field: str) -> tuple[int, ...]:
    out = tuple(values)
    if not out or not all(isinstance(v, int) and v >= 1 for v in out):
        raise ArchitectureError(f"{field}: expected a non-empty list of positive ints, got {list(values)}")
    return out


def resolve(cfg: ArchitectureConfig | ArchitectureSpec | str) -> ArchitectureSpec:
    """Merge a config's overrides into its preset and validate the result.

    Accepts a preset name, an :class:`ArchitectureConfig` or an already resolved spec.
    Raises :class:`ArchitectureError` (one line, naming the field) on inconsistent lengths or values
    and ``KeyError`` listing valid presets for an unknown name.
    """
    if isinstance(cfg, ArchitectureSpec):
        return cfg
    if isinstance(cfg, str):
        cfg = ArchitectureConfig(name=cfg)
    base = ARCHITECTURES.get(cfg.name)
    features = _positive(cfg.features if cfg.features is not None else base.features, "features")
    n = len(features)
    given = {"features"} if cfg.features is not None else set()

    def pick(field: str, override, default):
        if override is not None:
            given.add(field)
            return override
        return default

    blocks = _positive(pick("blocks", cfg.blocks, base.blocks), "blocks")
    strides = _triples(pick("strides", cfg.strides, base.strides), "strides")
    kernels = _triples(pick("kernel_sizes", cfg.kernel_sizes, base.kernel_sizes), "kernel_sizes")
    dec = _positive(pick("decoder_convs", cfg.decoder_convs, base.decoder_convs), "decoder_convs")
    for field, seq, want in (("blocks", blocks, n), ("strides", strides, n), ("kernel_sizes", kernels, n),
                             ("decoder_convs", dec, n - 1)):
        if len(seq) != want:
            origin = "" if field in given else f" (from preset {cfg.name!r}; set it too)"
            raise ArchitectureError(
                f"architecture {cfg.name!r}: {field} has {len(seq)} entries{origin}, expected {want} "
                f"for {n} stages"
            )
    if n < 2:
        raise ArchitectureError(f"architecture {cfg.name!r}: a U-Net needs at least 2 stages, got {n}")
    for i, k in enumerate(kernels):
        if any(a % 2 == 0 for a in k):
            raise ArchitectureError(f"kernel_sizes[{i}]: kernels must be odd (same padding), got {list(k)}")
    if cfg.init not in ("pytorch", "he"):
        raise ArchitectureError(f"init: expected 'pytorch' or 'he', got {cfg.init!r}")
    return dataclasses.replace(
        base, features=features, blocks=blocks, strides=strides, kernel_sizes=kernels,
        decoder_convs=dec, init=cfg.init,
    )
