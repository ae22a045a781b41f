"""The plan (``plan.json``): how every case of a prepared corpus was made.

A plan fixes what the stored arrays mean (orientation, spacing, normalisation, layout). All runs
into one folder (resumed runs, ``--part`` runs) must share it, so an existing plan that differs in
any of those fields is an error unless ``overwrite``. A folder of another plan schema version
(version 1: RAS-reoriented arrays) is refused even with ``overwrite``: its other cases would stay in
the old axis order.

``orientation`` ``"as-stored"`` and ``array_layout`` say that arrays are in SimpleITK's array order of
each file (what nnU-Net reads for fine-tuning); ``target_spacing`` and ``patch_size`` are listed in
that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mae3d.config import to_dict
from mae3d.io.atomic import read_json, write_json
from mae3d.io.volumes import ARRAY_LAYOUT, ORIENTATION
from mae3d.preprocessing.case import CaseSettings
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.store import CASES_DIR, PLAN_SCHEMA_VERSION, check_plan_version

__all__ = ["PLAN_KEYS", "PlanMismatchError", "make_plan", "settings_from_plan", "write_or_check_plan"]

# fields that define the stored data; two runs with different values cannot share a folder
PLAN_KEYS = ("schema_version", "target_spacing", "spacing_mode", "patch_size", "normalization", "orientation",
             "array_layout", "image_order", "mask_order", "order_z", "anisotropy_threshold", "blosc2")


class PlanMismatchError(ValueError):
    """The output folder holds a plan that differs from this run's."""


def make_plan(cfg: PrepareConfig, target_spacing: tuple[float, float, float] | None, manifest: str | Path,
              *, n_spacings_for_median: int | None = None) -> dict[str, Any]:
    """The plan dict for ``cfg`` with the resolved ``target_spacing`` (None: no resampling)."""
    plan: dict[str, Any] = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "target_spacing": None if target_spacing is None else [float(s) for s in target_spacing],
        "spacing_mode": cfg.spacing_mode,
        "patch_size": [int(p) for p in cfg.patch_size],
        "normalization": cfg.normalization,
        "orientation": ORIENTATION,
        "image_order": cfg.image_order,
        "mask_order": cfg.mask_order,
        "order_z": cfg.order_z,
        "anisotropy_threshold": cfg.anisotropy_threshold,
        "blosc2": to_dict(cfg.blosc2),
        "dtype": {"image": "float32", "masks": "uint8"},
        "array_layout": f"(C=1, *spatial): {ARRAY_LAYOUT}; target_spacing and patch_size in that order",
        "cases_dir": CASES_DIR,
        "manifest": str(Path(manifest).resolve()),
    }
    if n_spacings_for_median is not None:
        plan["median_spacing_from_n_images"] = n_spacings_for_median
    return plan


def write_or_check_plan(out_dir: Path, plan: dict[str, Any], *, overwrite: bool) -> None:
    """Write ``out_dir/plan.json``, or check that the one there matches ``plan`` on ``PLAN_KEYS``."""
    path = out_dir / "plan.json"
    if path.is_file():
        check_plan_version(read_json(path), path)  # also with overwrite: never mix conventions
    if path.is_file() and not overwrite:
        old = read_json(path)
        diff = [k for k in PLAN_KEYS if old.get(k) != plan.get(k)]
        if diff:
            k = diff[0]
            raise PlanMismatchError(f"{path}: existing plan differs in {', '.join(diff)} "
                                    f"({k}: {old.get(k)!r} there, {plan.get(k)!r} now); "
                                    f"use --overwrite or another output folder")
        return
    write_json(path, plan)


def settings_from_plan(plan: dict[str, Any], cfg: PrepareConfig) -> CaseSettings:
    """Per-case settings from a plan (``max_spacing`` comes from the run config)."""
    ts = plan["target_spacing"]
    return CaseSettings(
        target_spacing=None if ts is None else (float(ts[0]), float(ts[1]), float(ts[2])),
        patch_size=tuple(plan["patch_size"]),  # type: ignore[arg-type]
        normalization=plan["normalization"], image_order=plan["image_order"], mask_order=plan["mask_order"],
        order_z=plan["order_z"], anisotropy_threshold=plan["anisotropy_threshold"],
        max_spacing=cfg.max_spacing, blosc2=cfg.blosc2)
