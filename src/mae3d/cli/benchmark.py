"""``mae3d benchmark``: validate a benchmark spec, run its grid of cells, write its report."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` with the sub-commands ``validate``, ``run`` and ``report``."""
    p = subparsers.add_parser(
        "benchmark", help="run a benchmark spec (methods x datasets x folds x seeds) and report it",
        description=("Fine-tune every method on every dataset, fold and seed of a spec, predict the held-out "
                     "cases and evaluate them; then report Dice per dataset, average Dice, average rank, "
                     "deltas and paired significance against the from-scratch baseline "
                     "(docs/paper_benchmark.md)."))
    sub = p.add_subparsers(dest="benchmark_command", metavar="ACTION", required=True)

    v = sub.add_parser("validate", help="check a spec file and list its cells")
    v.add_argument("spec", metavar="SPEC", help="benchmark spec (YAML or JSON)")
    v.add_argument("--no-check-paths", dest="check_paths", action="store_false",
                   help="check the structure only (datasets / checkpoints need not exist here)")
    v.set_defaults(func=_validate)

    r = sub.add_parser("run", help="run (or resume) every cell of a spec")
    r.add_argument("spec", metavar="SPEC", help="benchmark spec (YAML or JSON)")
    r.add_argument("out", metavar="OUT", help="output folder (rerun to resume; finished cells are skipped)")
    r.add_argument("--only", action="append", default=[], metavar="KEY=V[,V..][,KEY=V..]",
                   help="run a subset, e.g. --only method=S3D,MAE,dataset=brainextraction (keys: method, "
                        "dataset, fold, seed, role; repeatable)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the spec's device (auto)")
    r.add_argument("--workers", type=int, default=1, metavar="N",
                   help="cells (and pre-trainings) run at once in separate processes (default 1); 2 on a "
                        "2-core machine keeps both cores busy with 1 torch thread each")
    r.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads (default: torch's, one per core); use 1 on a CPU shared with other "
                        "jobs")
    r.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write the report at the end")
    r.set_defaults(func=_run)

    rep = sub.add_parser("report", help="write OUT/report (Markdown, CSV, PNG) from the finished cells")
    rep.add_argument("out", metavar="OUT", help="benchmark output folder")
    rep.set_defaults(func=_report)


def _validate(args: argparse.Namespace) -> int:
    from mae3d.benchmark.cells import enumerate_cells
    from mae3d.benchmark.spec import load_spec

    spec = load_spec(args.spec, check_paths=args.check_paths)
    cells = enumerate_cells(spec)
    print(f"{args.spec}: valid (schema_version {spec.schema_version}); {len(spec.methods)} methods x "
          f"{len(spec.datasets)} datasets ({sum(d.role == 'dev' for d in spec.datasets)} dev) x seeds "
          f"{list(spec.seeds)} = {len(cells)} cells; reference: {spec.reference}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from mae3d.benchmark.cells import parse_only
    from mae3d.benchmark.report import write_report
    from mae3d.benchmark.runner import run_benchmark
    from mae3d.benchmark.spec import load_spec

    spec = load_spec(args.spec)
    summary = run_benchmark(spec, args.out, only=parse_only(args.only), device=args.device,
                            threads=args.threads, workers=args.workers)
    if args.report:
        files = write_report(args.out)
        print(f"report: {files.markdown}")
    return 0 if summary.ok else 1


def _report(args: argparse.Namespace) -> int:
    from mae3d.benchmark.report import write_report

    files = write_report(args.out)
    print(files.markdown.read_text())
    print(f"report: {files.markdown} (+ {files.summary_csv.name}, {files.averages_csv.name}, "
          f"{files.significance_csv.name}, {files.cells_csv.name}, {files.dice_png.name}, "
          f"{files.ranks_png.name})")
    return 0
