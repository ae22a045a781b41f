"""``mae3d demo``: prepare -> pre-train -> fine-tune (pre-trained and from scratch) -> evaluate -> report,
on the embedded real brain MRI, in minutes on a CPU."""

from __future__ import annotations

import argparse

from mae3d.cli.common import add_config_args, config_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser(
        "demo",
        help="one-command demo: pre-train, fine-tune vs from scratch, evaluate, report (CPU, minutes)",
        description=("Run the whole pipeline on the embedded real brain MRI: prepare the unlabelled corpus, "
                     "pre-train a small ResEnc by masked image modelling, fine-tune it and the same network "
                     "from scratch on brain extraction (train: the MNI 2009c T1 and the ROBEX head, test: "
                     "the held-out MNI 2009c T2), evaluate and write a report with figures. It is the "
                     "benchmark spec benchmarks/specs/demo.yaml run by the benchmark runner. Rerunning "
                     "reuses finished work. Sizes: --set pretrain_epochs=5 --set finetune_epochs=5 ... "
                     "(docs/demo.md)."))
    p.add_argument("out", nargs="?", default="runs/demo", metavar="OUT",
                   help="output folder (default runs/demo)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mae3d.benchmark.demo import DemoConfig, run_demo

    cfg = config_from_args(DemoConfig, args, device=args.device)
    result = run_demo(args.out, cfg)
    print()
    print(result.format_table())
    print()
    print(f"report:   {result.report}")
    for name, path in result.figures.items():
        print(f"figure:   {path}  ({name})")
    print(f"details:  {result.out / 'report' / 'report.md'} (benchmark report), "
          f"{result.out / 'pretrain'} (pre-training run)")
    return 0 if result.table and len(result.table) == 2 else 1
