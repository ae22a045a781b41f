"""``prepare``: manifest -> headers/filters -> plan -> parallel per-case preprocessing -> report.

Guarantees:
- resumable: a case whose properties JSON exists is finished and skipped (unless ``overwrite``);
  temporary files left by a killed run are removed, unfinished cases are redone;
- deterministic split: ``part``/``parts`` assign each image by a hash of its id, so parts are
  disjoint, cover the manifest, and do not move when other images are added;
- bad input never stops the run: the case is skipped with a one-line reason (report + summary);
- worker processes come from a forkserver (else spawn) pool; when a worker dies (killed, out of
  memory) the pool is replaced and the cases that were in flight are rerun one at a time, so only
  a case that kills a worker on its own is reported.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mae3d.config import write_run_config
from mae3d.corpus.duplicates import dedupe
from mae3d.corpus.manifest import ImageRecord, load_manifest
from mae3d.io.atomic import read_json, write_json
from mae3d.io.volumes import read_header
from mae3d.preprocessing.case import CaseError, CaseSettings, check_spacing, process_case
from mae3d.preprocessing.config import PrepareConfig
from mae3d.preprocessing.fingerprint import corpus_fingerprint, median_spacing
from mae3d.preprocessing.plan import make_plan, settings_from_plan, write_or_check_plan
from mae3d.preprocessing.store import CASES_DIR, MASK_SUFFIX, case_files

__all__ = ["PrepareReport", "part_of", "prepare", "report_name"]

log = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    """Outcome of one ``prepare`` run (one part)."""

    out_dir: Path
    part: int = 0
    parts: int = 1
    n_images: int = 0  # unique manifest images assigned to this part
    done: list[str] = field(default_factory=list)  # processed by this run
    already_done: list[str] = field(default_factory=list)  # finished before this run (resumed)
    skipped: list[dict[str, str]] = field(default_factory=list)  # bad input: image_id, path, reason
    filtered: list[dict[str, str]] = field(default_factory=list)  # excluded by the corpus filter
    target_spacing: list[float] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True if no case was skipped as bad input."""
        return not self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "part": self.part, "parts": self.parts,
                "n_images": self.n_images, "done": self.done, "already_done": self.already_done,
                "skipped": self.skipped, "filtered": self.filtered, "target_spacing": self.target_spacing,
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        """Human-readable summary: counts, time, and every skipped case with its reason."""
        rate = len(self.done) / self.seconds if self.seconds > 0 else 0.0
        lines = [f"prepare: {self.n_images} images in part {self.part + 1}/{self.parts} -> {self.out_dir}",
                 f"  done {len(self.done)} | already done {len(self.already_done)}"
                 f" | skipped {len(self.skipped)} | filtered {len(self.filtered)}"
                 f" | {self.seconds:.1f} s ({rate:.2f} images/s)"]
        for s in self.skipped:
            lines.append(f"  skipped {s['image_id']}: {s['reason']}")
        for s in self.filtered[:20]:
            lines.append(f"  filtered {s['image_id']}: {s['reason']}")
        if len(self.filtered) > 20:
            lines.append(f"  ... {len(self.filtered) - 20} more filtered (see the report)")
        return "\n".join(lines)


def part_of(image_id: str, parts: int) -> int:
    """The part (0-based) an image belongs to: a stable hash of its id, modulo ``parts``."""
    return int.from_bytes(hashlib.sha1(image_id.encode()).digest()[:8], "big") % parts


def report_name(part: int, parts: int) -> str:
    """``report.json`` for a single-part run; ``report.part-<i>-of-<n>.json`` per part otherwise."""
    return "report.json" if parts == 1 else f"report.part-{part}-of-{parts}.json"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _header_task(record: ImageRecord, max_spacing: float) -> tuple[tuple[float, ...] | None,
                                                                    tuple[int, ...] | None, str | None]:
    """(spacing, shape, None) from the header, or (None, None, reason) for bad input."""
    try:
        h = read_header(record.path)
        check_spacing(record.path, h.spacing, max_spacing)
    except (FileNotFoundError, ValueError) as e:  # VolumeError and CaseError are ValueErrors
        return None, None, _one_line(str(e))
    except Exception as e:  # a header that crashes a library is bad input too
        return None, None, _one_line(f"{record.path}: unreadable ({type(e).__name__}: {e})")
    return h.spacing, h.shape, None


def _case_task(record: ImageRecord, settings: CaseSettings, cases_dir: Path, nthreads: int) -> str | None:
    """Process one case; None on success, else the one-line reason it was skipped."""
    try:
        process_case(record, settings, cases_dir, nthreads=nthreads)
    except CaseError as e:
        return _one_line(str(e))
    except Exception as e:  # one bad case must never kill the run
        log.debug("case %s failed", record.image_id, exc_info=True)
        return _one_line(f"{record.path}: unexpected error ({type(e).__name__}: {e})")
    return None


def _init_worker(nthreads: int) -> None:
    """Limit BLAS/OpenMP and blosc2 threads so that workers do not oversubscribe the cores."""
    import blosc2
    from threadpoolctl import threadpool_limits

    threadpool_limits(nthreads)
    blosc2.set_nthreads(nthreads)


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: workers fork from a clean server (no threads, no tqdm state) and start fast;
    # spawn where it does not exist
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mae3d.preprocessing.case"])
        return ctx
    return multiprocessing.get_context("spawn")


def _remove_stale_temps(cases_dir: Path, case_ids: set[str]) -> int:
    """Delete temporary files (``.<name>.<random>.tmp...``) that belong to ``case_ids``."""
    if not cases_dir.is_dir():
        return 0
    suffixes = [".b2nd", ".json", *(f"{s}.b2nd" for s in MASK_SUFFIX.values())]
    n = 0
    for p in cases_dir.iterdir():
        name = p.name
        if not (name.startswith(".") and ".tmp" in name):
            continue
        body = name[1:]
        owner = next((body[: i] for i in range(len(body)) if body[: i] in case_ids
                      and any(body[i:].startswith(s + ".") for s in suffixes)), None)
        if owner is not None:
            p.unlink(missing_ok=True)
            n += 1
    return n


class _Pool:
    """A process pool that can be replaced when a worker dies."""

    def __init__(self, n: int, nthreads: int) -> None:
        self.n, self.nthreads = n, nthreads
        self.ex: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self.ex is None:
            self.ex = ProcessPoolExecutor(self.n, mp_context=_context(), initializer=_init_worker,
                                          initargs=(self.nthreads,))
        return self.ex

    def reset(self) -> None:
        if self.ex is not None:
            self.ex.shutdown(wait=True, cancel_futures=True)
            self.ex = None


def _read_headers(records: list[ImageRecord], cfg: PrepareConfig, pool: _Pool | None
                  ) -> dict[str, tuple[tuple[float, ...] | None, tuple[int, ...] | None, str | None]]:
    if pool is None:
        results = [_header_task(r, cfg.max_spacing) for r in records]
    else:
        chunk = max(1, min(64, len(records) // (4 * pool.n) or 1))
        spacing = [cfg.max_spacing] * len(records)
        results = list(pool.get().map(_header_task, records, spacing, chunksize=chunk))
    return {r.image_id: res for r, res in zip(records, results, strict=True)}


def _run_cases(todo: list[ImageRecord], settings: CaseSettings, cases_dir: Path, pool: _Pool | None,
               nthreads: int, report: PrepareReport, progress: bool,
               task: Callable[[ImageRecord, CaseSettings, Path, int], str | None] = _case_task) -> None:
    """Run ``task`` on every record (inline or in ``pool``), recording done/skipped in ``report``."""
    bar = tqdm(total=len(todo), desc=f"prepare {report.part + 1}/{report.parts}", unit="img",
               disable=not progress, dynamic_ncols=True)

    def finish(r: ImageRecord, reason: str | None) -> None:
        if reason is None:
            report.done.append(r.image_id)
        else:
            report.skipped.append({"image_id": r.image_id, "path": str(r.path), "reason": reason})
            bar.set_postfix(skipped=len(report.skipped))
        bar.update(1)

    try:
        if pool is None:
            for r in todo:
                finish(r, task(r, settings, cases_dir, nthreads))
            return
        queue = deque(todo)
        suspects: deque[ImageRecord] = deque()  # in flight when a worker died: rerun one at a time
        running: dict[Future, ImageRecord] = {}
        while queue or suspects or running:
            if suspects and not running:
                r = suspects.popleft()
                try:
                    finish(r, pool.get().submit(task, r, settings, cases_dir, nthreads).result())
                except BrokenProcessPool:
                    finish(r, f"{r.path}: worker process died on this case (killed or out of memory)")
                    pool.reset()
                continue
            while queue and not suspects and len(running) < 2 * pool.n:
                r = queue.popleft()
                running[pool.get().submit(task, r, settings, cases_dir, nthreads)] = r
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                r = running.pop(fut)
                try:
                    finish(r, fut.result())
                except BrokenProcessPool:
                    broken = True
                    suspects.append(r)
            if broken:
                for fut, r in list(running.items()):
                    del running[fut]
                    if fut.done() and not isinstance(fut.exception(), BrokenProcessPool):
                        finish(r, fut.result())
                    else:
                        suspects.append(r)
                log.warning("a worker process died; rerunning the %d cases it may have hit one by one",
                            len(suspects))
                pool.reset()
    finally:
        bar.close()


def _resolve_workers(workers: int | None) -> int:
    return (os.cpu_count() or 1) if workers is None else workers


def prepare(manifest_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: PrepareConfig | None = None,
            *, progress: bool = True) -> PrepareReport:
    """Preprocess this part of the manifest's images into ``out_dir`` (see the module docstring).

    Writes ``plan.json``, ``config.json``, ``cases/*``, ``fingerprint.json`` and the report
    (``report.json``, or one per part). Raises for a bad manifest or a conflicting plan; bad images
    are reported in the returned ``PrepareReport`` instead.
    """
    t0 = time.perf_counter()
    cfg = cfg or PrepareConfig()
    out = Path(out_dir)
    manifest = load_manifest(manifest_path)
    unique, dups = dedupe(manifest.images())
    mine = [r for r in unique if part_of(r.image_id, cfg.parts) == cfg.part]
    report = PrepareReport(out_dir=out, part=cfg.part, parts=cfg.parts, n_images=len(mine))
    for r, reason in dups:
        if part_of(r.image_id, cfg.parts) == cfg.part:
            report.skipped.append({"image_id": r.image_id, "path": str(r.path), "reason": reason})

    need = unique if cfg.spacing_mode == "median" else mine
    n_workers = min(_resolve_workers(cfg.workers), len(need))
    cores = os.cpu_count() or 1
    pool = _Pool(n_workers, max(1, cores // n_workers)) if n_workers > 1 else None
    try:
        headers = _read_headers(need, cfg, pool)
        usable = [r for r in need if headers[r.image_id][2] is None]
        kept_all, dropped_all = cfg.filters.apply(usable, shape_of=lambda r: headers[r.image_id][1])
        target: tuple[float, float, float] | None
        n_median = None
        if cfg.spacing_mode == "fixed":
            target = tuple(cfg.target_spacing)  # type: ignore[assignment]
        elif cfg.spacing_mode == "median":
            target = median_spacing([headers[r.image_id][0] for r in kept_all])  # type: ignore[misc]
            n_median = len(kept_all)
        else:
            target = None
        report.target_spacing = None if target is None else list(target)

        out.mkdir(parents=True, exist_ok=True)
        plan = make_plan(cfg, target, manifest_path, n_spacings_for_median=n_median)
        write_or_check_plan(out, plan, overwrite=cfg.overwrite)
        write_run_config(out, cfg)
        cases_dir = out / CASES_DIR
        cases_dir.mkdir(exist_ok=True)

        mine_ids = {r.image_id for r in mine}
        for r in mine:
            reason = headers[r.image_id][2]
            if reason is not None:
                report.skipped.append({"image_id": r.image_id, "path": str(r.path), "reason": reason})
        for r, reason in dropped_all:
            if r.image_id in mine_ids:
                report.filtered.append({"image_id": r.image_id, "path": str(r.path), "reason": reason})
        kept = [r for r in kept_all if r.image_id in mine_ids]
        _remove_stale_temps(cases_dir, {r.image_id for r in kept})
        todo = []
        for r in kept:
            if not cfg.overwrite and case_files(cases_dir, r.image_id)["properties"].is_file():
                report.already_done.append(r.image_id)
            else:
                todo.append(r)
        settings = settings_from_plan(plan, cfg)
        nthreads = cores if pool is None else pool.nthreads
        _run_cases(todo, settings, cases_dir, pool if todo else None, nthreads, report, progress)
    finally:
        if pool is not None:
            pool.reset()

    finished = sorted(p for p in cases_dir.glob("*.json") if not p.name.startswith("."))
    write_json(out / "fingerprint.json", corpus_fingerprint(read_json(p) for p in finished))
    report.seconds = time.perf_counter() - t0
    write_json(out / report_name(cfg.part, cfg.parts), report.to_dict())
    return report
