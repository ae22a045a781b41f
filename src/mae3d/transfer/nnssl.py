"""Export to and import from the nnssl / OpenMind checkpoint format (nnssl.md §3, §6).

An nnssl model folder (as on Hugging Face, e.g. ``AnonRes/ResEncL-OpenMind-MAE``) holds
``checkpoint_final.pth`` = ``{"network_weights", "nnssl_adaptation_plan", "trainer_name", ...}`` and the
same adaptation plan as ``adaptation_plan.json``. The plan carries:

* ``architecture_plans``: ``{"arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import"}``; the
  preset ``"ResEncL"`` (kwargs null) when the network equals ResEnc-L, else ``"ResidualEncoderUNet"`` /
  ``"PlainConvUNet"`` with nnU-Net style kwargs;
* ``pretrain_plan``: here a minimal plan, ``{"dataset_name", "plans_name", "image_reader_writer",
  "transpose_forward", "transpose_backward", "configurations": {"onemmiso": {"spacing", "patch_size",
  "normalization_schemes", "use_mask_for_norm"}}}`` -- the fields the fine-tuning fork's
  ``like_nnssl`` reads (spacing and pre-training patch size of the first configuration) plus the axis
  order; nnssl's full ``Plan`` dataclass has more fields we do not know;
* ``pretrain_num_input_channels``, ``recommended_downstream_patchsize``, ``key_to_encoder``,
  ``key_to_stem``, ``keys_to_in_proj``, ``key_to_lpe`` (null for CNNs).

Axis order: nnssl and mae3d both pre-train on SimpleITK's array order of each file, nnssl transposed
by its plan's ``transpose_forward``; plan spacing and patch are listed after that transpose. mae3d
never transposes, so an export writes the identity and mae3d's spacing / patch as they are; an import
keeps the plan's spacing / patch and records a non-identity ``transpose_forward`` in the checkpoint's
``pretrain`` block, so fine-tuning plans reproduce the pre-training axes. The z-score variant maps to
``use_mask_for_norm`` (``zscore`` -> False, ``zscore-nonzero`` -> True) both ways.

The exported checkpoint additionally keeps mae3d's own metadata under ``"mae3d"`` (nnssl ignores
unknown keys), so mae3d -> nnssl -> mae3d gives back the identical checkpoint (training state excepted).
Only CNN U-Nets are supported; Primus (ViT) plans are rejected with a clear error.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mae3d.io.atomic import atomic_dir, read_json, write_json
from mae3d.models import UnsafeClassError, canonical_architecture, describe, same_architecture
from mae3d.models.allowlist import is_allowed
from mae3d.transfer.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    load_weights_only,
    strip_training_state,
    validate,
)

__all__ = ["CHECKPOINT_NAME", "PLAN_NAME", "adaptation_plan", "export_nnssl", "import_nnssl", "is_resenc_l",
           "nnssl_to_mae3d", "resenc_l_architecture"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_final.pth"
PLAN_NAME = "adaptation_plan.json"
_CONFIGURATION = "onemmiso"  # nnssl's name for its (1 mm isotropic) pre-training configuration
_META_KEYS = ("format", "version", "architecture", "pretrain", "keys", "config", "provenance")
# mae3d normalisation name <-> nnU-Net / nnssl normalisation scheme class name
_NORM_TO_NNSSL = {"zscore": "ZScoreNormalization", "zscore-nonzero": "ZScoreNormalization",
                  "ct": "CTNormalization", "none": "NoNormalization",
                  "rescale_0_1": "RescaleTo01Normalization"}
_NORM_FROM_NNSSL = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "NoNormalization": "none",
                    "RescaleTo01Normalization": "rescale_0_1"}
_IDENTITY = [0, 1, 2]
_SUPPORTED_ARCHS = ("ResEncL", "ResidualEncoderUNet", "PlainConvUNet")


def resenc_l_architecture() -> dict[str, Any]:
    """The ResEnc-L preset (nnssl's ``"ResEncL"``, nnssl.md §1.1) as an architecture dict (a fresh copy).

    Taken from :func:`mae3d.models.describe` (``"resenc-l"``): 6 stages, features 32..320, residual
    blocks [1,3,4,6,6,6], 3x3x3 kernels, strides 1 then 2 x5, one decoder conv per stage, conv bias,
    InstanceNorm3d(eps=1e-5, affine), LeakyReLU(inplace), no dropout.
    """
    return canonical_architecture(describe("resenc-l"))


def is_resenc_l(arch: Mapping[str, Any]) -> bool:
    """True if ``arch`` is exactly the ResEnc-L preset (the ``"ResEncL"`` of nnssl adaptation plans)."""
    return same_architecture(arch, resenc_l_architecture())


def _norm_name(normalization: Any) -> str | None:
    if isinstance(normalization, Mapping):
        normalization = normalization.get("scheme", normalization.get("name"))
    return normalization.lower() if isinstance(normalization, str) else None


def _norm_scheme(normalization: Any) -> str:
    name = _norm_name(normalization)
    if name is None:
        return "ZScoreNormalization"  # nnssl's only scheme
    return _NORM_TO_NNSSL.get(name, str(normalization))


def _transpose_from_plan(pretrain_plan: Mapping[str, Any], where: str) -> list[int]:
    tf = pretrain_plan.get("transpose_forward")
    if tf is None:
        return list(_IDENTITY)
    if sorted(int(a) for a in tf) != _IDENTITY:
        raise CheckpointError(f"{where}: pretrain_plan.transpose_forward {tf!r} is not a permutation of "
                              "0, 1, 2")
    return [int(a) for a in tf]


def adaptation_plan(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The nnssl adaptation plan (JSON-serialisable dict) describing a mae3d checkpoint."""
    validate(ckpt)
    arch, pre, keys = ckpt["architecture"], ckpt["pretrain"], ckpt["keys"]
    if is_resenc_l(arch):
        arch_plans = {"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": None}
    else:
        canon = canonical_architecture(arch)
        arch_plans = {"arch_class_name": canon["network_class_name"].rsplit(".", 1)[-1],
                      "arch_kwargs": canon["arch_kwargs"],
                      "arch_kwargs_requiring_import": list(canon["_kw_requires_import"])}
    n_in = int(pre["in_channels"])
    patch = [int(v) for v in pre["patch_size"]]
    downstream = [int(v) for v in pre.get("recommended_downstream_patch_size", patch)]
    tf = [int(a) for a in pre.get("transpose_forward") or _IDENTITY]
    return {
        "architecture_plans": arch_plans,
        "pretrain_plan": {
            "dataset_name": str(pre.get("dataset_name", "mae3d")),
            "plans_name": "mae3dPlans",
            "image_reader_writer": "SimpleITKIO",  # the array order of the stored data (no reorientation)
            "transpose_forward": tf,
            "transpose_backward": sorted(range(3), key=lambda a: tf[a]),
            "configurations": {_CONFIGURATION: {
                # listed after transpose_forward, like every nnssl / nnU-Net plan
                "spacing": [float(v) for v in pre["spacing"]],
                "patch_size": patch,
                "normalization_schemes": [_norm_scheme(pre["normalization"])] * n_in,
                "use_mask_for_norm": [_norm_name(pre["normalization"]) == "zscore-nonzero"] * n_in,
            }},
        },
        "pretrain_num_input_channels": n_in,
        "recommended_downstream_patchsize": downstream,
        "key_to_encoder": keys["encoder"],
        "key_to_stem": keys["stem"],
        "keys_to_in_proj": list(keys["in_proj"]),
        "key_to_lpe": None,
    }


def export_nnssl(ckpt: Mapping[str, Any], dest_dir: str | os.PathLike, *,
                 trainer_name: str | None = None) -> Path:
    """Write ``dest_dir/{checkpoint_final.pth, adaptation_plan.json}`` atomically.

    ``dest_dir`` must not exist yet (a finished export is never replaced).

    Training state (optimizer, scaler, RNG, ...) is dropped. Returns ``dest_dir``.
    """
    validate(ckpt)
    ck = strip_training_state(ckpt)
    plan = adaptation_plan(ck)
    payload = {
        "network_weights": ck["network_weights"],
        "nnssl_adaptation_plan": plan,
        "trainer_name": trainer_name or f"mae3d_{ck['pretrain']['method']}",
        "mae3d": {k: ck[k] for k in _META_KEYS},
    }
    dest = Path(dest_dir)
    with atomic_dir(dest) as tmp:
        torch.save(payload, tmp / CHECKPOINT_NAME)
        write_json(tmp / PLAN_NAME, plan)
    return dest


def import_nnssl(path: str | os.PathLike) -> dict[str, Any]:
    """Read an nnssl checkpoint (file or folder holding ``checkpoint_final.pth``) as a mae3d checkpoint."""
    path = Path(path)
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    return nnssl_to_mae3d(load_weights_only(file), source=file)


def _architecture_from_plan(arch_plans: Any, where: str) -> dict[str, Any]:
    if not isinstance(arch_plans, Mapping) or not isinstance(arch_plans.get("arch_class_name"), str):
        raise CheckpointError(f"{where}: adaptation plan lacks architecture_plans.arch_class_name")
    name = arch_plans["arch_class_name"]
    if name == "ResEncL":
        return resenc_l_architecture()
    if not is_allowed(name):
        if name.rsplit(".", 1)[-1] in ("NoSkipResEncL", "PrimusS", "PrimusB", "PrimusM", "PrimusL", "Primus"):
            raise CheckpointError(f"{where}: architecture {name!r} is not supported by mae3d "
                                  f"(supported: {', '.join(_SUPPORTED_ARCHS)})")
        raise UnsafeClassError(f"{where}: architecture class {name!r} is not on mae3d's allowlist "
                               f"(supported: {', '.join(_SUPPORTED_ARCHS)})")
    kwargs = arch_plans.get("arch_kwargs")
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{where}: architecture {name!r} needs arch_kwargs in the adaptation plan")
    req = arch_plans.get("arch_kwargs_requiring_import")
    if req is None:  # infer: the kwargs whose values are class names
        req = [k for k, v in kwargs.items() if isinstance(v, str) and "." in v]
    arch = {"network_class_name": name, "arch_kwargs": dict(kwargs), "_kw_requires_import": list(req)}
    return canonical_architecture(arch, source=where)


def _num_output_channels(weights: Mapping[str, torch.Tensor]) -> int:
    """Output channels of the last segmentation head (``decoder.seg_layers.<last>.weight``); 1 if absent."""
    heads = {int(k.split(".")[2]): v for k, v in weights.items()
             if k.startswith("decoder.seg_layers.") and k.endswith(".weight") and k.split(".")[2].isdigit()}
    return int(heads[max(heads)].shape[0]) if heads else 1


def nnssl_to_mae3d(raw: Any, *, source: str | os.PathLike | None = None,
                   plan: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert a loaded nnssl checkpoint dict into a (validated) mae3d checkpoint dict.

    The adaptation plan is ``plan`` if given, else the embedded ``nnssl_adaptation_plan``, else
    ``adaptation_plan.json`` next to ``source``. If the file was written by :func:`export_nnssl`, its
    ``"mae3d"`` metadata is used (exact round trip) after checking it agrees with the plan.
    """
    where = str(source) if source is not None else "nnssl checkpoint"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("network_weights"), Mapping):
        raise CheckpointError(f"{where}: not an nnssl checkpoint (no network_weights dict)")
    if plan is None:
        plan = raw.get("nnssl_adaptation_plan")
    sibling = Path(source).parent / PLAN_NAME if source is not None else None
    if plan is None and sibling is not None and sibling.is_file():
        plan = read_json(sibling)
    if not isinstance(plan, Mapping):
        raise CheckpointError(f"{where}: no adaptation plan (neither an embedded nnssl_adaptation_plan nor "
                              f"{PLAN_NAME} next to it)")
    for key in ("architecture_plans", "key_to_encoder", "key_to_stem", "keys_to_in_proj"):
        if key not in plan:
            raise CheckpointError(f"{where}: adaptation plan lacks {key!r}")
    if plan.get("key_to_lpe"):
        raise CheckpointError(f"{where}: transformer checkpoints (key_to_lpe={plan['key_to_lpe']!r}) "
                              "are not supported")
    arch = _architecture_from_plan(plan["architecture_plans"], where)
    weights = OrderedDict((k, v) for k, v in raw["network_weights"].items())
    keys = {"stem": plan["key_to_stem"], "encoder": plan["key_to_encoder"],
            "in_proj": list(plan["keys_to_in_proj"])}

    meta = raw.get("mae3d")
    if isinstance(meta, Mapping) and meta.get("format") == FORMAT:
        if not same_architecture(meta["architecture"], arch) or dict(meta["keys"]) != keys:
            raise CheckpointError(f"{where}: embedded mae3d metadata disagrees with the adaptation plan")
        ckpt = {k: meta[k] for k in _META_KEYS}
        ckpt["network_weights"] = weights
    else:
        pretrain_plan = plan.get("pretrain_plan") or {}
        configs = pretrain_plan.get("configurations") or {}
        if not configs:
            raise CheckpointError(f"{where}: adaptation plan has no pretrain_plan.configurations")
        cfg = next(iter(configs.values()))
        n_in = int(plan.get("pretrain_num_input_channels", 1))
        schemes = cfg.get("normalization_schemes") or ["ZScoreNormalization"]
        normalization = _NORM_FROM_NNSSL.get(schemes[0], schemes[0])
        if normalization == "zscore" and any(cfg.get("use_mask_for_norm") or []):
            normalization = "zscore-nonzero"
        pretrain = {
            "method": f"nnssl:{raw['trainer_name']}" if raw.get("trainer_name") else "nnssl",
            # listed after the plan's transpose_forward: the pre-training arrays' axis order
            "spacing": [float(v) for v in cfg["spacing"]],
            "patch_size": [int(v) for v in cfg["patch_size"]],
            "normalization": normalization,
            "orientation": "as-stored",  # nnssl reads SimpleITK's array order, no reorientation
            "in_channels": n_in,
            "num_output_channels": _num_output_channels(weights),
        }
        tf = _transpose_from_plan(pretrain_plan, where)
        if tf != _IDENTITY:
            pretrain["transpose_forward"] = tf
        downstream = plan.get("recommended_downstream_patchsize")
        if downstream is not None:
            pretrain["recommended_downstream_patch_size"] = [int(v) for v in downstream]
        ckpt = {
            "format": FORMAT, "version": VERSION, "network_weights": weights, "architecture": arch,
            "pretrain": pretrain, "keys": keys, "config": {},
            "provenance": {"imported_from": where, "source_format": "nnssl",
                           "trainer_name": raw.get("trainer_name"),
                           "citations": [str(c) for c in raw.get("citations", [])]},
        }
    validate(ckpt, source=where)
    return ckpt
