"""``mae3d benchmark`` sub-commands (registered into a bare parser, as cli/main.py does)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mae3d.benchmark.spec import SpecError
from mae3d.cli import benchmark as benchmark_cli

SPECS = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mae3d")
    benchmark_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_validate_lists_the_grid(capsys):
    args = _parser().parse_args(["benchmark", "validate", str(SPECS / "paper.yaml"), "--no-check-paths"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "valid (schema_version 1); 4 methods x 13 datasets (5 dev)" in out and "= 260 cells" in out
    args = _parser().parse_args(["benchmark", "validate", str(SPECS / "paper.yaml")])
    with pytest.raises(SpecError,
                       match=r"paper\.yaml: datasets 'D1_MS_FLAIR'\.path: dataset folder .* not found"):
        args.func(args)


def test_run_and_report_arguments():
    args = _parser().parse_args(["benchmark", "run", "spec.yaml", "out", "--only", "method=S3D,MAE",
                                 "--only", "seed=0", "--device", "cpu", "--threads", "1"])
    assert args.only == ["method=S3D,MAE", "seed=0"] and args.threads == 1 and args.report
    assert args.workers == 1  # one cell at a time unless asked
    assert _parser().parse_args(["benchmark", "run", "spec.yaml", "out", "--workers", "2"]).workers == 2
    args = _parser().parse_args(["benchmark", "report", "out"])
    assert args.out == "out"
