#!/usr/bin/env bash
# Set up (if needed), then run the demo on the embedded real brain MRI (CPU, ~15 min on 2 cores):
# corpus -> prepare -> S3D pre-training -> fine-tune pre-trained and from scratch in nnU-Net ->
# predict the held-out head -> Dice/NSD/HD95 -> report. Re-running reuses finished stages.
# Usage: bash scripts/demo.sh [OUT_DIR] [mae3d demo options, e.g. --set pretrain_epochs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mae3d demo "${@:-runs/demo}"
