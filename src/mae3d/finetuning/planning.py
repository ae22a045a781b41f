"""Plans "like pre-trained" (and nnU-Net's dynamic plans) for a raw dataset, then preprocessing.

Steps, all with nnU-Net v2's own code pointed at mae3d-managed folders (see
:mod:`mae3d.finetuning.environment`: ``nnUNet_raw`` = the dataset's parent folder,
``nnUNet_preprocessed`` = ``<out>/nnUNet_preprocessed``):

1. fingerprint: ``DatasetFingerprintExtractor`` (spacings, shapes, foreground intensities);
2. base plans: nnU-Net's ResEnc planner (``nnUNetPlannerResEncL``, or ``M``), whose ``3d_fullres``
   configuration is the dynamic baseline as is and the template of the fixed plans;
3. plans derived for the run (one ``3d_fullres`` configuration, pure functions below):

   * fixed ("like pre-trained", paper's setting; as the nnssl fork's ``like_nnssl``): the
     checkpoint's axis order (``transpose_forward``, identity for mae3d checkpoints) and spacing,
     ``ZScoreNormalization`` for every channel with ``use_mask_for_norm`` as in pre-training (whole
     box -> False, non-zero region -> True; or, with ``normalization="nnunet"``, nnU-Net's scheme per
     channel, e.g. for CT), the checkpoint's recommended downstream patch (or ``patch_size``), the
     checkpoint's architecture with the dataset's channels and classes, batch 2, and the
     pre-training provenance as ``plans["mae3d_pretrain"]``;
   * dynamic: the planner's configuration (optionally with another batch / patch size);

4. preprocessing with nnU-Net's ``DefaultPreprocessor`` into a folder named by a data identifier
   that encodes spacing and normalisation, plus a ``gt_segmentations`` copy for validation.

One axis convention end to end: ``mae3d prepare`` stores SimpleITK's array order of each file,
the order nnU-Net's readers return; the checkpoint lists spacing and patch in its pre-training
arrays' order, which is that order transposed by the checkpoint's ``transpose_forward`` (identity for
mae3d, see :mod:`mae3d.finetuning.pretrained`). Fixed plans set the same ``transpose_forward`` (not the
planner's largest-spacing-first one), so nnU-Net's preprocessed arrays have the pre-training axes and
spacing / patch are copied without reordering. A user-given ``patch_size`` is in the plans' axis
order (as ``plans.json`` shows it).

Nothing is overwritten silently: an existing plans file with other content, preprocessed data of
another plan under the same identifier, or a fingerprint of a changed raw dataset is an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mae3d.finetuning.config import FinetuneConfig
from mae3d.finetuning.dataset_checks import DatasetSummary, check_dataset
from mae3d.finetuning.environment import in_process_pools, nnunet_environment
from mae3d.finetuning.pretrained import PretrainedCheckpoint
from mae3d.finetuning.schedules import SCHEDULES
from mae3d.io.atomic import read_json, write_json

__all__ = [
    "CONFIGURATION",
    "PlanError",
    "PreparedPlans",
    "check_patch_fits",
    "derive_dynamic_plans",
    "derive_fixed_plans",
    "plans_name_for",
    "prepare_plans",
]

log = logging.getLogger(__name__)

CONFIGURATION = "3d_fullres"
PREPROCESSED_DIRNAME = "nnUNet_preprocessed"
# written next to the data folder (nnU-Net infers the storage format from the files inside it)
_MARKER_SUFFIX = ".mae3d_preprocessing.json"
_RAW_SIGNATURE = "mae3d_raw_signature.json"
_PLANNERS = {"ResEncL": "nnUNetPlannerResEncL", "ResEncM": "nnUNetPlannerResEncM"}
# configuration fields that determine the preprocessed arrays (not patch / batch / architecture)
_PREPROCESSING_FIELDS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                         "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs",
                         "preprocessor_name")


class PlanError(ValueError):
    """The plans cannot be made (e.g. the patch does not fit the architecture); one line."""


@dataclass(frozen=True)
class PreparedPlans:
    """Plans written and data preprocessed for one run."""

    dataset_name: str
    plans_name: str
    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    preprocessed_dir: Path  # <nnUNet_preprocessed>/<Dataset>

    @property
    def configuration(self) -> dict[str, Any]:
        return self.plans["configurations"][CONFIGURATION]

    @property
    def data_dir(self) -> Path:
        return self.preprocessed_dir / self.configuration["data_identifier"]


# ------------------------------------------------------------------------------------------ pure parts
def _stride_per_axis(architecture: Mapping[str, Any]) -> tuple[int, ...]:
    kwargs = architecture["arch_kwargs"]
    n = int(kwargs["n_stages"])
    strides = kwargs["strides"]
    strides = [strides] * n if isinstance(strides, int) else list(strides)
    per_stage = [[s] * 3 if isinstance(s, int) else list(s) for s in strides]
    return tuple(math.prod(s[a] for s in per_stage) for a in range(len(per_stage[0])))


def check_patch_fits(architecture: Mapping[str, Any], patch_size: Sequence[int], *, source: str = "checkpoint"
                     ) -> None:
    """Raise :class:`PlanError` unless ``patch_size`` is a multiple of the architecture's total stride
    and leaves more than one bottleneck voxel (InstanceNorm cannot normalise a single value)."""
    stride = _stride_per_axis(architecture)
    patch = [int(p) for p in patch_size]
    if len(patch) != len(stride):
        raise PlanError(f"{source}: patch {patch} has {len(patch)} axes, the architecture {len(stride)}")
    if any(p % s for p, s in zip(patch, stride, strict=True)):
        raise PlanError(f"{source}: architecture (total stride {list(stride)}) cannot host patch {patch}: "
                        f"every axis must be a multiple of the stride")
    bottleneck = [p // s for p, s in zip(patch, stride, strict=True)]
    if math.prod(bottleneck) < 2:
        raise PlanError(f"{source}: patch {patch} is too small for the architecture: its bottleneck would be "
                        f"{bottleneck} (total stride {list(stride)}); use a larger patch")


def _retranspose(values: Sequence[float], old_tf: Sequence[int], new_tf: Sequence[int]) -> list[float]:
    """``values`` listed after ``old_tf`` -> listed after ``new_tf`` (both relative to the reader's order)."""
    raw = [0.0] * len(values)
    for j, a in enumerate(old_tf):
        raw[a] = values[j]
    return [raw[a] for a in new_tf]


def _legacy_check(pretrained: PretrainedCheckpoint, patch: Sequence[int]) -> None:
    """Checkpoints pre-trained on RAS-reoriented arrays: usable only where axis order cannot matter."""
    if not pretrained.legacy_ras:
        return
    spacing = pretrained.spacing()
    if len(set(spacing)) > 1 or len({int(p) for p in patch}) > 1:
        raise PlanError(f"{pretrained.path}: pre-trained on RAS-reoriented arrays (mae3d before plan "
                        f"schema 2) with anisotropic spacing {spacing} or patch {list(patch)}, whose axis "
                        "order does not match nnU-Net's arrays; pre-train again on a corpus prepared by "
                        "this mae3d")
    log.warning("%s: pre-trained on RAS-reoriented arrays (mae3d before plan schema 2); its isotropic "
                "spacing and cubic patch carry over, but the encoder saw other axes than nnU-Net's arrays",
                pretrained.path)


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _preprocessing_fields(plans: Mapping[str, Any], configuration: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: configuration.get(k) for k in _PREPROCESSING_FIELDS}
    fields["transpose_forward"] = plans["transpose_forward"]
    fields["intensity_properties"] = plans["foreground_intensity_properties_per_channel"]
    return json.loads(json.dumps(fields, default=str))


def plans_name_for(cfg: FinetuneConfig, pretrained: PretrainedCheckpoint | None) -> str:
    """Run-specific plans name (nnU-Net names the model folder ``<Trainer>__<plans>__<config>``).

    fixed: ``mae3dPlans_<ckpt-tag>[_nnunetnorm][_scratch]_<schedule>``; dynamic:
    ``nnUNetResEnc<L|M>Plans_<schedule>``.
    """
    schedule = cfg.schedule_name.replace("-", "")
    if cfg.plans == "dynamic":
        return f"nnUNetResEnc{cfg.dynamic_planner[-1]}Plans_{schedule}"
    if pretrained is None:
        raise PlanError("fixed plans copy the checkpoint's architecture, spacing and patch: pass a "
                        "checkpoint (with --from-scratch to train them without its weights)")
    scratch = "_scratch" if cfg.from_scratch else ""
    norm = "_nnunetnorm" if cfg.normalization == "nnunet" else ""
    return f"mae3dPlans_{pretrained.tag()}{norm}{scratch}_{schedule}"


def derive_fixed_plans(base_plans: Mapping[str, Any], fingerprint: Mapping[str, Any],
                       pretrained: PretrainedCheckpoint, *, plans_name: str,
                       patch_size: Sequence[int] | None = None, batch_size: int | None = None,
                       head: str = "unet", from_scratch: bool = False,
                       normalization: str = "pretrained") -> dict[str, Any]:
    """Plans "like pre-trained" from nnU-Net's base plans (pure; see module docstring).

    Args:
        base_plans: plans written by nnU-Net's planner (its ``3d_fullres`` is the template).
        fingerprint: ``dataset_fingerprint.json`` (for the median shape at the new spacing).
        pretrained: the checkpoint (architecture, spacing, patch, keys, provenance).
        plans_name: name written into the plans.
        patch_size: patch in plans axis order; default the checkpoint's recommended downstream patch.
        batch_size: default 2 (the paper's fine-tuning batch).
        head: ``unet`` or ``linear_probe`` (:class:`~mae3d.finetuning.network.LinearProbeNet`).
        from_scratch: recorded in the provenance (weights are not loaded).
        normalization: ``pretrained`` (z-score every channel) or ``nnunet`` (the planner's schemes).
    """
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    if CONFIGURATION not in base_plans["configurations"]:
        raise PlanError(f"{base_plans.get('plans_name')}: nnU-Net planned no {CONFIGURATION} configuration "
                        "(2-D dataset?); only 3-D datasets are supported")
    base_tf = [int(a) for a in base_plans["transpose_forward"]]
    tf = pretrained.transpose_forward  # the pre-training arrays' axes; identity for mae3d checkpoints
    spacing = pretrained.spacing()
    patch = [int(p) for p in (patch_size if patch_size is not None else pretrained.downstream_patch())]
    check_patch_fits(pretrained.architecture, patch, source=str(pretrained.path))
    _legacy_check(pretrained, patch)
    base_conf = base_plans["configurations"][CONFIGURATION]
    num_channels = len(base_plans["foreground_intensity_properties_per_channel"])
    if normalization == "nnunet":
        schemes, use_mask = list(base_conf["normalization_schemes"]), list(base_conf["use_mask_for_norm"])
    elif normalization == "pretrained":
        schemes = ["ZScoreNormalization"] * num_channels
        try:
            use_mask = [pretrained.use_mask_for_norm()] * num_channels
        except ValueError as e:
            raise PlanError(str(e)) from None
    else:
        raise ValueError(f"normalization must be 'pretrained' or 'nnunet', got {normalization!r}")

    spacing_reader = [spacing[tf.index(a)] for a in range(3)]  # undo the transpose: reader (array) order
    pairs = zip(fingerprint["spacings"], fingerprint["shapes_after_crop"], strict=True)
    new_shapes = [compute_new_shape(shape, sp, spacing_reader) for sp, shape in pairs]
    median_shape = np.median(np.array(new_shapes), 0)[tf]

    conf = copy.deepcopy(dict(base_conf))
    for key in ("inherits_from", "next_stage", "previous_stage"):
        conf.pop(key, None)
    conf.update({
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size if batch_size is not None else 2),
        "patch_size": patch,
        "median_image_size_in_voxels": [float(s) for s in median_shape],
        "spacing": spacing,
        "normalization_schemes": schemes,
        "use_mask_for_norm": use_mask,
        "architecture": copy.deepcopy(pretrained.architecture),
        "mae3d_head": head,
    })
    plans = copy.deepcopy(dict(base_plans))
    plans["plans_name"] = plans_name
    plans["configurations"] = {CONFIGURATION: conf}
    plans["transpose_forward"] = list(tf)
    plans["transpose_backward"] = [int(i) for i in np.argsort(tf)]
    for key in ("original_median_spacing_after_transp", "original_median_shape_after_transp"):
        if key in plans:
            plans[key] = _retranspose(plans[key], base_tf, tf)
    sp = "x".join(f"{s:g}" for s in spacing)
    digest = _short_hash(_preprocessing_fields(plans, conf))
    norm = "-".join(sorted({s.replace("Normalization", "") for s in schemes}))
    conf["data_identifier"] = f"mae3d_Spacing_{sp}_Norm_{norm}_{digest}"
    plans["mae3d_plans"] = {"kind": "fixed", "base_plans": base_plans["plans_name"]}
    plans["mae3d_pretrain"] = {**pretrained.provenance(), "weights_loaded": not from_scratch}
    return plans


def derive_dynamic_plans(base_plans: Mapping[str, Any], *, plans_name: str,
                         patch_size: Sequence[int] | None = None, batch_size: int | None = None
                         ) -> dict[str, Any]:
    """nnU-Net's own ``3d_fullres`` configuration, optionally with another patch / batch size (pure)."""
    if CONFIGURATION not in base_plans["configurations"]:
        raise PlanError(f"{base_plans.get('plans_name')}: nnU-Net planned no {CONFIGURATION} configuration "
                        "(2-D dataset?); only 3-D datasets are supported")
    conf = copy.deepcopy(dict(base_plans["configurations"][CONFIGURATION]))
    for key in ("inherits_from", "next_stage", "previous_stage"):
        conf.pop(key, None)
    if patch_size is not None:
        check_patch_fits(conf["architecture"], patch_size,
                         source=f"{base_plans['plans_name']} (dynamic plans)")
        conf["patch_size"] = [int(p) for p in patch_size]
    if batch_size is not None:
        conf["batch_size"] = int(batch_size)
    conf["mae3d_head"] = "unet"
    plans = copy.deepcopy(dict(base_plans))
    plans["plans_name"] = plans_name
    plans["configurations"] = {CONFIGURATION: conf}
    plans["mae3d_plans"] = {"kind": "dynamic", "base_plans": base_plans["plans_name"]}
    plans["mae3d_pretrain"] = None
    return plans


# ------------------------------------------------------------------------------------------ nnU-Net calls
def _raw_signature(summary: DatasetSummary) -> str:
    """Hash of dataset.json and the names, sizes and mtimes of all training files."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    cases = get_filenames_of_train_images_and_targets(str(summary.folder), summary.dataset_json)
    items = []
    for case in sorted(cases):
        for f in [*cases[case]["images"], cases[case]["label"]]:
            st = Path(f).stat()
            items.append([Path(f).name, st.st_size, st.st_mtime_ns])
    return _short_hash({"dataset_json": summary.dataset_json, "files": items})


def _fingerprint(summary: DatasetSummary, pre_dir: Path, num_processes: int) -> dict[str, Any]:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )

    signature = _raw_signature(summary)
    sig_file = pre_dir / _RAW_SIGNATURE
    fp_file = pre_dir / "dataset_fingerprint.json"
    if fp_file.is_file():
        old = read_json(sig_file).get("signature") if sig_file.is_file() else None
        if old != signature:
            raise PlanError(f"{pre_dir}: holds plans/preprocessed data of a different version of "
                            f"{summary.folder} (files or dataset.json changed); use another output folder "
                            "or delete it")
        return read_json(fp_file)
    extractor = DatasetFingerprintExtractor(summary.name, num_processes=num_processes, verbose=False)
    extractor.show_progress_bar = False
    fingerprint = extractor.run(overwrite_existing=True)
    write_json(sig_file, {"signature": signature, "dataset": str(summary.folder.resolve())})
    return fingerprint


def _base_plans(summary: DatasetSummary, pre_dir: Path, planner: str) -> dict[str, Any]:
    # the planner modules import only dynamic_network_architectures' U-Nets (no primus/timm)
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import (
        residual_encoder_unet_planners as planners,
    )

    planner_cls = getattr(planners, _PLANNERS[planner])
    planner_obj = planner_cls(summary.name)
    plans_file = pre_dir / f"{planner_obj.plans_identifier}.json"
    if plans_file.is_file():
        return read_json(plans_file)
    return planner_obj.plan_experiment()  # writes plans_file and copies dataset.json


def _write_plans(pre_dir: Path, plans: dict[str, Any]) -> None:
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    recursive_fix_for_json_export(plans)
    plans_file = pre_dir / f"{plans['plans_name']}.json"
    normalised = json.loads(json.dumps(plans, default=str))
    if plans_file.is_file():
        if read_json(plans_file) != normalised:
            raise PlanError(f"{plans_file}: exists with different content (another patch/batch size or "
                            "checkpoint under the same name); use another output folder")
        return
    write_json(plans_file, normalised)


def _preprocess(summary: DatasetSummary, pre_dir: Path, plans: dict[str, Any], num_processes: int) -> Path:
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    conf = plans["configurations"][CONFIGURATION]
    data_dir = pre_dir / conf["data_identifier"]
    marker = {"preprocessing": _preprocessing_fields(plans, conf), "raw_signature": _raw_signature(summary),
              "cases": list(summary.cases)}
    marker_file = pre_dir / f"{conf['data_identifier']}{_MARKER_SUFFIX}"
    if marker_file.is_file():
        if read_json(marker_file) != json.loads(json.dumps(marker)):
            raise PlanError(f"{data_dir}: holds data preprocessed with another plan or dataset version; "
                            "use another output folder or delete it")
        return data_dir
    # no marker: absent or an interrupted run of this same plan -> nnU-Net rebuilds the folder
    DefaultPreprocessor(verbose=False).run(summary.name, CONFIGURATION, plans["plans_name"], num_processes)
    # nnU-Net's preprocess_dataset() also copies the labels for the final validation (with distutils)
    gt_dir = pre_dir / "gt_segmentations"
    gt_dir.mkdir(exist_ok=True)
    for case in summary.cases:
        src = summary.folder / "labelsTr" / f"{case}{summary.file_ending}"
        if "dataset" in summary.dataset_json:
            src = Path(summary.dataset_json["dataset"][case]["label"])
            src = src if src.is_absolute() else summary.folder / src
        dst = gt_dir / f"{case}{summary.file_ending}"
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    write_json(marker_file, marker)
    return data_dir


def prepare_plans(dataset_dir: str | Path, preprocessed_root: str | Path, cfg: FinetuneConfig,
                  pretrained: PretrainedCheckpoint | None) -> PreparedPlans:
    """Check the dataset, fingerprint, plan and preprocess it for one run (idempotent).

    Args:
        dataset_dir: nnU-Net raw dataset ``.../DatasetXXX_Name``.
        preprocessed_root: mae3d's ``nnUNet_preprocessed`` folder (created if needed).
        cfg: the run's config (plans kind, patch/batch overrides, schedule, workers).
        pretrained: the checkpoint (required for fixed plans, also when training from scratch).

    Raises:
        DatasetError: bad raw dataset (one line per problem).
        PlanError: the patch does not fit the checkpoint's architecture, or existing plans /
            preprocessed data conflict with this run.
    """
    summary = check_dataset(dataset_dir, read_cases=cfg.verify_dataset)
    plans_name = plans_name_for(cfg, pretrained)
    if pretrained is not None and cfg.plans == "fixed" and not cfg.from_scratch \
            and pretrained.in_channels > summary.num_channels:
        raise PlanError(f"{pretrained.path}: pre-trained on {pretrained.in_channels} channels, the dataset "
                        f"has {summary.num_channels}; cannot drop input channels")
    preprocessed_root = Path(preprocessed_root)
    pre_dir = preprocessed_root / summary.name
    pre_dir.mkdir(parents=True, exist_ok=True)
    _, _, prep_workers = cfg.resolved_workers()
    head = SCHEDULES.get(cfg.schedule_name).head
    with nnunet_environment(raw=summary.folder.parent, preprocessed=preprocessed_root), \
            in_process_pools(prep_workers == 1):
        fingerprint = _fingerprint(summary, pre_dir, prep_workers)
        base = _base_plans(summary, pre_dir, cfg.dynamic_planner)
        if cfg.plans == "fixed":
            assert pretrained is not None  # plans_name_for raised otherwise
            plans = derive_fixed_plans(base, fingerprint, pretrained, plans_name=plans_name,
                                       patch_size=cfg.patch_size, batch_size=cfg.batch_size, head=head,
                                       from_scratch=cfg.from_scratch, normalization=cfg.normalization)
        else:
            plans = derive_dynamic_plans(base, plans_name=plans_name, patch_size=cfg.patch_size,
                                         batch_size=cfg.batch_size)
        _write_plans(pre_dir, plans)
        _preprocess(summary, pre_dir, plans, prep_workers)
    dataset_json = read_json(pre_dir / "dataset.json")
    return PreparedPlans(dataset_name=summary.name, plans_name=plans_name, plans=read_json(
        pre_dir / f"{plans_name}.json"), dataset_json=dataset_json, preprocessed_dir=pre_dir)

