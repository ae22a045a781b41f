"""What the cells of a benchmark need before they run, built once under ``OUT`` and reused:

* embedded downstream datasets -> ``OUT/data/raw/<dataset>/DatasetXXX_Name`` (mae3d.data builders);
* pre-training corpora -> ``OUT/data/corpora/<corpus>/{manifest.json, prepared/}`` (embedded manifest
  minus the excluded images, then ``mae3d prepare``; resumable);
* pre-training recipes -> ``OUT/pretrain/<method>/checkpoint_final.pth`` (``pretrain`` with
  ``resume="auto"``: a killed pre-training continues; a finished one is reused). A folder holding a run
  of another configuration is an error, never reused silently.

Execution-only settings (device, threads, quiet output) may change between reruns.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mae3d.benchmark.spec import BenchmarkSpec, CorpusEntry, DatasetEntry, MethodEntry, SpecError
from mae3d.config import apply_overrides, to_dict
from mae3d.io.atomic import read_json

__all__ = [
    "checkpoint_for",
    "dataset_dir",
    "filtered_embedded_manifest",
    "prepared_corpus",
    "pretrain_config",
    "pretrained_checkpoint",
    "redirect_output",
]

log = logging.getLogger(__name__)

#: PretrainConfig keys that do not change the trained weights' meaning (may differ on a rerun)
_EXECUTION_KEYS = ("train.device", "train.quiet", "train.num_threads", "train.tensorboard", "loader.workers",
                   "train.preview_every", "checkpoint.every", "checkpoint.keep_every")


@contextlib.contextmanager
def redirect_output(log_file: Path) -> Iterator[None]:
    """Send this process's ``print`` / progress-bar output to ``log_file`` (nnU-Net prints a lot);
    logging handlers keep their streams, so warnings still reach the terminal."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def dataset_dir(spec_ds: DatasetEntry, out: Path) -> Path:
    """The dataset's nnU-Net raw folder; an embedded dataset is built the first time."""
    if spec_ds.path is not None:
        return spec_ds.path
    from mae3d.data import NnunetDataConfig, build_nnunet_dataset, dataset_folder_name

    assert spec_ds.embedded is not None
    root = out / "data" / "raw" / spec_ds.name
    dest = root / dataset_folder_name(spec_ds.embedded)
    if dest.is_dir():
        config = dest / "config.json"
        saved = (read_json(config).get("config") or {}) if config.is_file() else {}
        if saved.get("spacing") != spec_ds.spacing:
            raise SpecError(f"{dest}: built at spacing {saved.get('spacing')}, the spec asks for "
                            f"{spec_ds.spacing}; use another output folder")
        return dest
    log.info("building embedded dataset %s (spacing %s mm) in %s", spec_ds.embedded, spec_ds.spacing, root)
    return build_nnunet_dataset(spec_ds.embedded, root, NnunetDataConfig(spacing=spec_ds.spacing))


def filtered_embedded_manifest(dest: Path, exclude: tuple[str, ...] = ()) -> Path:
    """Write the embedded corpus manifest to ``dest/manifest.json`` without images of the ``exclude`` sources.

    Excluding a downstream dataset's test images keeps pre-training off the evaluation data (the
    paper's pitfall P3). An existing manifest is reused if it excludes the same sources.
    """
    from mae3d.corpus.manifest import save_manifest
    from mae3d.data import embedded_manifest

    path = dest / "manifest.json"
    if path.is_file():
        excluded = read_json(path).get("collection", {}).get("metadata", {}).get("mae3d_excluded_sources")
        if sorted(excluded or []) != sorted(exclude):
            raise SpecError(f"{path}: excludes {sorted(excluded or [])}, the spec {sorted(exclude)}; use "
                            "another output folder")
        return path
    manifest, _ = embedded_manifest()
    for ds in manifest.collection.datasets.values():
        for sub_id in list(ds.subjects):
            sub = ds.subjects[sub_id]
            for ses in sub.sessions.values():
                ses.images = [img for img in ses.images if img.metadata.get("source") not in exclude]
            sub.sessions = {k: s for k, s in sub.sessions.items() if s.images}
            if not sub.sessions:
                del ds.subjects[sub_id]
    manifest.collection.datasets = {k: d for k, d in manifest.collection.datasets.items() if d.subjects}
    if not manifest.collection.datasets:
        raise SpecError(f"{dest}: excluding {list(exclude)} leaves no image in the embedded corpus")
    manifest.collection.metadata["mae3d_excluded_sources"] = sorted(exclude)
    manifest.root = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    return save_manifest(manifest, path)


def prepared_corpus(corpus: CorpusEntry, out: Path) -> Path:
    """The corpus folder written by ``prepare`` (prepared now if needed; resumable)."""
    if corpus.prepared is not None:
        return corpus.prepared
    from mae3d.preprocessing.config import PrepareConfig
    from mae3d.preprocessing.runner import prepare

    root = out / "data" / "corpora" / corpus.name
    manifest = corpus.manifest
    if manifest is None:
        manifest = filtered_embedded_manifest(root, corpus.exclude)
    cfg = apply_overrides(PrepareConfig(), corpus.prepare)
    dest = root / "prepared"
    report = prepare(manifest, dest, cfg, progress=False)
    if not report.done and not report.already_done:
        raise SpecError(f"corpora.{corpus.name}: preprocessing produced no case "
                        f"({len(report.skipped)} skipped)")
    return dest


def pretrain_config(spec: BenchmarkSpec, method: MethodEntry, corpus_dir: Path, device: str) -> Any:
    """The PretrainConfig of a recipe method: its overrides, the corpus folder, the run's device and the
    process's current number of torch threads (set by the runner)."""
    import torch

    from mae3d.pretraining.config import PretrainConfig

    assert method.pretrain is not None
    return apply_overrides(PretrainConfig(), [*method.pretrain.overrides, f"data.corpus={corpus_dir}",
                                              f"train.device={device}",
                                              f"train.num_threads={torch.get_num_threads()}"])


def _strip(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    for key in _EXECUTION_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    out.get("data", {}).pop("corpus", None)  # the same corpus may live at another absolute path
    return out


def pretrained_checkpoint(spec: BenchmarkSpec, method: MethodEntry, out: Path, device: str) -> Path:
    """A recipe method's ``OUT/pretrain/<method>/checkpoint_final.pth``, pre-trained if needed."""
    from mae3d.pretraining.api import pretrain

    assert method.pretrain is not None
    run_dir = out / "pretrain" / method.name
    final = run_dir / "checkpoint_final.pth"
    corpus = spec.corpora[method.pretrain.corpus]
    corpus_dir = prepared_corpus(corpus, out)
    cfg = pretrain_config(spec, method, corpus_dir, device)
    saved = run_dir / "config.json"
    if saved.is_file():
        old = read_json(saved).get("config") or {}
        if _strip(old) != _strip(to_dict(cfg)):
            raise SpecError(f"{run_dir}: holds a pre-training of another configuration than method "
                            f"{method.name!r}'s recipe; use another output folder")
    if final.is_file():
        return final
    log.info("pre-training %s on corpus %s -> %s", method.name, corpus.name, run_dir)
    with redirect_output(run_dir.parent / f"{method.name}.log"):
        return pretrain(cfg, run_dir, resume="auto")


def checkpoint_for(spec: BenchmarkSpec, method: MethodEntry, out: Path, device: str) -> Path | None:
    """The checkpoint a method's cells use: its own, its recipe's, its ``plans_from`` method's, or None."""
    if method.checkpoint is not None:
        return method.checkpoint
    if method.pretrain is not None:
        return pretrained_checkpoint(spec, method, out, device)
    if method.plans_from is not None:
        return checkpoint_for(spec, spec.method(method.plans_from), out, device)
    return None
