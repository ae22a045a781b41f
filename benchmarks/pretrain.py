"""Pre-training benchmarks of issue #3, in one command: step time + memory, then loader throughput.

Runs, one after the other (never concurrently, so they do not share the cores):

1. ``benchmarks/pretrain_step.py``: train-step time and peak memory of ``s3d`` vs ``mae`` at two
   model sizes and two patch sizes (goal: S3D/MAE <= 1.15; the nnssl reference costs 1.2-1.4x);
2. ``benchmarks/augment.py``: augmented 160^3 patches per second per core of mae3d's loader against
   the reference pipeline rebuilt from batchgenerators' public API (goal >= 3x) and
   batchgeneratorsv2 configured like nnU-Net v2 (goal >= 1x).

Usage: ``python benchmarks/pretrain.py [--quick]``; extra options go to the step benchmark
(e.g. ``--configs resenc-l:64:2 --malloc tuned``). Record the printed tables in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = ["--quick"] if "--quick" in argv else []
    step_args = [a for a in argv if a != "--quick"]
    for script, args in (("pretrain_step.py", [*quick, *step_args]), ("augment.py", quick)):
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
