"""Augmented-patch throughput at 160³: mae3d's loader against the reference pipelines, one core each.

Pipelines (all on the same preprocessed volume: nilearn's MNI ICBM152 2009a T1, cropped to its
non-zero box and z-scored; all run in this process, one after another, with one torch thread):

* ``mae3d``: our training stream (``build_train_loader``, no worker processes, batches of 2)
  reading from a blosc2 corpus on disk - the timing INCLUDES reading/decompressing the stored
  volume for every patch;
* ``bg v1 (nnssl)``: batchgenerators v1 ``SpatialTransform`` configured like nnssl's MAE trainer
  (257³ input, 160³ centre patch, no elastic, rotation U(±30°) on each axis with p_rot_per_sample
  0.2 / p_rot_per_axis 1, scale (0.7, 1.4) with p 0.2, cubic data order 3, constant 0 border, seg
  order 1 with border -1) + ``MirrorTransform((0, 1, 2))`` + ``NumpyToTensor``, on data plus the
  all-zero uint8 anonymisation mask nnssl carries as seg (and a data-only variant);
* ``bgv2 (nnU-Net v2)``: batchgeneratorsv2 ``SpatialTransform`` with nnU-Net v2.8.1's 3-D settings
  (no elastic, p 0.2 rotation ±30°, p 0.2 scaling (0.7, 1.4) synchronised across axes, trilinear)
  + ``MirrorTransform((0, 1, 2))``, image only;
* ``mae3d worker, dev-aug``: the CPU share left with ``device_augment`` (workers only read the
  regions; rotation/scaling/mirroring then run batched on the GPU, not measured here);
* ``torch``: bare ``affine_grid`` + ``grid_sample`` (trilinear) of a rotated/scaled 160³ grid on the
  257³ crop - a lower-bound reference for "every patch transformed".

The reference pipelines get their 257³ crops from memory, prepared before timing (nnssl's loader
cuts them from RAM or blosc2 first); that read is NOT in their numbers but is in ours.

Rows: ``identity`` (no rotation/scale drawn; crop + mirror), ``forced`` (every patch rotated AND
scaled), ``scale only`` (ours: the separable path), ``as configured`` (paper's probabilities,
measured) and ``expected`` (the as-configured mean from the rows above and the draw probabilities,
less noisy than the measured mix). patches/s are per core: CPU seconds of this single-threaded
process (wall-clock figures are shown too; they drift when the machine is shared).

Usage: ``python benchmarks/augment.py [--quick] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from mae3d.io.atomic import write_json
from mae3d.preprocessing.store import PLAN_SCHEMA_VERSION, write_case
from mae3d.pretraining.data import AugmentConfig, LoaderConfig, build_train_loader

PATCH = (160, 160, 160)
BIG = (257, 257, 257)  # nnssl's initial patch for 160³ with ±30° rotations
ROT = np.deg2rad(30.0)
P_ROT = P_SCALE = 0.2
P_NONE = (1 - P_ROT) * (1 - P_SCALE)  # 0.64: neither drawn


# ----------------------------------------------------------------------------------------------- data
def load_volume() -> np.ndarray:
    """The MNI 2009a T1 shipped in nilearn's wheel, cropped to non-zero and z-scored (float32 XYZ)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn is not installed (its MNI template is the benchmark volume)")
    path = (Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    nz = np.argwhere(vol != 0)
    lo, hi = nz.min(0), nz.max(0) + 1
    vol = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return ((vol - vol.mean()) / vol.std()).astype(np.float32)


def nnssl_like_crops(vol: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` zero-padded 257³ windows placed like nnssl's loader (random lower corner in
    ``[-pad/2, shape - 257 + pad/2]`` with ``pad = max(257 - shape, 257 - 160)``)."""
    crops = []
    shape = np.asarray(vol.shape)
    for _ in range(n):
        pad = np.maximum(np.asarray(BIG) - shape, np.asarray(BIG) - np.asarray(PATCH))
        lo = [int(rng.integers(-(p // 2), s - b + p // 2 + 1))
              for p, s, b in zip(pad, shape, BIG, strict=True)]
        out = np.zeros(BIG, np.float32)
        src = tuple(slice(max(a, 0), min(a + b, s)) for a, b, s in zip(lo, BIG, shape, strict=True))
        dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, lo, strict=True))
        out[dst] = vol[src]
        crops.append(out)
    return crops


def write_corpus(vol: np.ndarray, root: Path) -> None:
    """A one-case prepared corpus (our store format) with an all-zero anonymisation mask."""
    write_json(root / "plan.json", {"schema_version": PLAN_SCHEMA_VERSION, "patch_size": list(PATCH)})
    write_case(root / "cases", "mni09a", vol[None], {"image_id": "mni09a"},
               {"anonymization": np.zeros((1, *vol.shape), np.uint8)}, patch_size=PATCH)


# -------------------------------------------------------------------------------------------- timing
def timed(step: Callable[[], int], n_patches: int, warmup: int = 1) -> dict[str, float]:
    """Run ``step`` (returns patches made) until ``n_patches``; per-patch CPU and wall seconds."""
    for _ in range(warmup):
        step()
    done, c0, w0 = 0, time.process_time(), time.perf_counter()
    while done < n_patches:
        done += step()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"n": done, "cpu_s": cpu / done, "wall_s": wall / done}


def ours_step(root: Path, aug: AugmentConfig, masks: tuple[str, ...], seed: int,
              device_augment: bool = False) -> Callable[[], int]:
    cfg = LoaderConfig(patch_size=PATCH, batch_size=2, workers=0, augment=aug, masks=masks,
                       device_augment=device_augment)
    it = iter(build_train_loader(root, ["mni09a"], cfg, seed=seed))
    return lambda: len(next(it)["case_ids"])


def v1_step(crops: list[np.ndarray], p_rot: float, p_scale: float, with_seg: bool) -> Callable[[], int]:
    from batchgenerators.transforms.abstract_transforms import Compose
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
    from batchgenerators.transforms.utility_transforms import NumpyToTensor

    spatial = SpatialTransform(
        PATCH, patch_center_dist_from_border=None, do_elastic_deform=False,
        do_rotation=True, angle_x=(-ROT, ROT), angle_y=(-ROT, ROT), angle_z=(-ROT, ROT), p_rot_per_axis=1,
        do_scale=True, scale=(0.7, 1.4), border_mode_data="constant", border_cval_data=0, order_data=3,
        border_mode_seg="constant", border_cval_seg=-1, order_seg=1, random_crop=False,
        p_el_per_sample=0, p_scale_per_sample=p_scale, p_rot_per_sample=p_rot,
        independent_scale_for_each_axis=False)
    keys = ["data", "seg"] if with_seg else ["data"]
    tr = Compose([spatial, MirrorTransform((0, 1, 2)), NumpyToTensor(keys, "float")])
    seg = np.zeros((1, 1, *BIG), np.uint8)
    cyc = itertools.cycle(crops)

    def step() -> int:
        batch = {"data": next(cyc)[None, None]}
        if with_seg:
            batch["seg"] = seg
        tr(**batch)
        return 1

    return step


def bgv2_step(crops: list[np.ndarray], p_rot: float, p_scale: float) -> Callable[[], int]:
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

    tr = ComposeTransforms([
        SpatialTransform(PATCH, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                         p_rotation=p_rot, rotation=(-ROT, ROT), p_scaling=p_scale, scaling=(0.7, 1.4),
                         p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                         border_mode_seg="constant", padding_value_seg=-1),
        MirrorTransform(allowed_axes=(0, 1, 2)),
    ])
    tensors = [torch.from_numpy(c)[None] for c in crops]
    cyc = itertools.cycle(tensors)

    def step() -> int:
        tr(image=next(cyc))
        return 1

    return step


def torch_step(crops: list[np.ndarray], rng: np.random.Generator) -> Callable[[], int]:
    from mae3d.pretraining.data.params import rotation_matrix

    tensors = [torch.from_numpy(c)[None, None] for c in crops]
    cyc = itertools.cycle(tensors)

    def step() -> int:
        a = rotation_matrix(rng.uniform(-ROT, ROT, 3)) * rng.uniform(0.7, 1.4) * (PATCH[0] / BIG[0])
        theta = torch.zeros(1, 3, 4)
        theta[0, :, :3] = torch.from_numpy(a).float()
        grid = F.affine_grid(theta, (1, 1, *PATCH), align_corners=False)
        F.grid_sample(next(cyc), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return 1

    return step


# ---------------------------------------------------------------------------------------------- main
def machine_info() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "numpy", "blosc2", "batchgenerators", "batchgeneratorsv2", "scipy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": model, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "load_avg_start": os.getloadavg(), "versions": versions}


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    np.random.seed(0)  # batchgenerators v1/v2 draw from numpy's global RNG
    torch.manual_seed(0)
    k = 5 if quick else 1
    n = {"id": 30 // k, "forced": 15 // k, "mixed": 100 // k, "v1_id": 10 // k, "v1_forced": max(1, 5 // k),
         "v1_mixed": 40 // k, "torch": 10 // k}
    info = machine_info()
    vol = load_volume()
    info["volume_shape"] = list(vol.shape)
    rng = np.random.default_rng(0)
    crops = nnssl_like_crops(vol, 3, rng)
    rows: list[dict[str, Any]] = []

    def add(pipeline: str, row: str, res: dict[str, float]) -> None:
        rows.append({"pipeline": pipeline, "row": row, **res})
        print(f"  {pipeline:<22} {row:<16} n={res['n']:<4} {1 / res['cpu_s']:7.2f} patches/s/core "
              f"(cpu {res['cpu_s'] * 1e3:7.1f} ms, wall {res['wall_s'] * 1e3:7.1f} ms)", flush=True)

    with tempfile.TemporaryDirectory(prefix="mae3d_bench_") as tmp:
        root = Path(tmp)
        write_corpus(vol, root)
        no_geo = AugmentConfig(p_rotation=0.0, p_scale=0.0)
        for masks, tag in (((), "mae3d"), (("anonymization",), "mae3d +mask")):
            add(tag, "identity", timed(ours_step(root, no_geo, masks, 1), n["id"]))
            forced = AugmentConfig(p_rotation=1.0, p_scale=1.0)
            scale_only = AugmentConfig(p_rotation=0.0, p_scale=1.0)
            add(tag, "forced", timed(ours_step(root, forced, masks, 2), n["forced"]))
            add(tag, "scale only", timed(ours_step(root, scale_only, masks, 3), n["forced"]))
            add(tag, "as configured", timed(ours_step(root, AugmentConfig(), masks, 4), n["mixed"]))
        # device_augment: what a worker still does when the GPU interpolates (read regions only)
        add("mae3d worker, dev-aug", "as configured",
            timed(ours_step(root, AugmentConfig(), (), 4, device_augment=True), n["mixed"]))
    add("bgv2 (nnU-Net v2)", "identity", timed(bgv2_step(crops, 0.0, 0.0), n["id"]))
    add("bgv2 (nnU-Net v2)", "forced", timed(bgv2_step(crops, 1.0, 1.0), n["forced"]))
    add("bgv2 (nnU-Net v2)", "as configured", timed(bgv2_step(crops, P_ROT, P_SCALE), n["mixed"]))
    for with_seg, tag in ((True, "bg v1 (nnssl)"), (False, "bg v1 data only")):
        add(tag, "identity", timed(v1_step(crops, 0.0, 0.0, with_seg), n["v1_id"]))
        add(tag, "forced", timed(v1_step(crops, 1.0, 1.0, with_seg), n["v1_forced"]))
        if with_seg:
            add(tag, "as configured", timed(v1_step(crops, P_ROT, P_SCALE, with_seg), n["v1_mixed"]))
    add("torch grid_sample", "forced", timed(torch_step(crops, rng), n["torch"]))

    # expected as-configured cost from the per-path rows and the draw probabilities
    def get(p: str, r: str) -> dict[str, float] | None:
        return next((x for x in rows if x["pipeline"] == p and x["row"] == r), None)

    for p in sorted({r["pipeline"] for r in rows} - {"torch grid_sample"}):
        ident, forced, scale = get(p, "identity"), get(p, "forced"), get(p, "scale only")
        if ident is None or forced is None:
            continue
        exp = {}
        for key in ("cpu_s", "wall_s"):
            if scale is not None:  # ours: scale-only patches take the separable path
                exp[key] = P_NONE * ident[key] + P_ROT * forced[key] + (1 - P_ROT) * P_SCALE * scale[key]
            else:
                exp[key] = P_NONE * ident[key] + (1 - P_NONE) * forced[key]
        exp["n"] = 0
        rows.append({"pipeline": p, "row": "expected", **exp})

    info["load_avg_end"] = os.getloadavg()
    return {"machine": info, "quick": quick, "rows": rows, "ratios": ratios(rows)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Speed of ours relative to each reference (> 1: ours is faster), per-core CPU time."""
    def rate(p: str, r: str) -> float | None:
        x = next((x for x in rows if x["pipeline"] == p and x["row"] == r), None)
        return None if x is None else 1.0 / x["cpu_s"]

    out = {}
    for r in ("as configured", "expected", "forced", "identity"):
        ours = rate("mae3d", r)
        for ref in ("bg v1 (nnssl)", "bgv2 (nnU-Net v2)"):
            theirs = rate(ref, r)
            if ours and theirs:
                out[f"mae3d / {ref} [{r}]"] = ours / theirs
        ours_m, v1 = rate("mae3d +mask", r), rate("bg v1 (nnssl)", r)
        if ours_m and v1:
            out[f"mae3d +mask / bg v1 (nnssl) [{r}]"] = ours_m / v1
    lb, forced = rate("torch grid_sample", "forced"), rate("mae3d", "forced")
    if lb and forced:
        out["mae3d / torch grid_sample [forced]"] = forced / lb
    return out


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"\nmachine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}, python {m['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    print(f"load average start {tuple(round(x, 2) for x in m['load_avg_start'])}, "
          f"end {tuple(round(x, 2) for x in m['load_avg_end'])}; torch threads 1; volume {m['volume_shape']}")
    print("\n| pipeline | row | n | patches/s/core (CPU time) | ms/patch CPU | ms/patch wall |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        n = r["n"] if r["n"] else "-"
        print(f"| {r['pipeline']} | {r['row']} | {n} | {1 / r['cpu_s']:.2f} | {r['cpu_s'] * 1e3:.1f} | "
              f"{r['wall_s'] * 1e3:.1f} |")
    print("\nratios (per-core throughput, > 1 = mae3d faster):")
    for k, v in res["ratios"].items():
        print(f"  {k}: {v:.2f}x")
    print("\nnote: mae3d rows include reading + decompressing the blosc2 file for every patch; the "
          "reference rows start from 257³ crops already in memory.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5x fewer patches per row (a smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    res = run(args.quick)
    print_table(res)
    if args.out is not None:
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
