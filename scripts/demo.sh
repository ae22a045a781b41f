#!/usr/bin/env bash
# Set up (if needed), then run the demo on the embedded real brain MRI: corpus manifest ->
# preprocessing (1.5 mm, blosc2) -> a short S3D pre-training of a small ResEnc on the CPU.
# Re-running reuses finished stages. Usage: bash scripts/demo.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-runs/demo}
M=.venv/bin/mae3d

if [ ! -f "$OUT/corpus/manifest.json" ]; then
  "$M" data corpus "$OUT/corpus"
fi
"$M" corpus info "$OUT/corpus/manifest.json"
"$M" prepare "$OUT/corpus/manifest.json" "$OUT/prepared" --spacing 1.5 1.5 1.5 --set patch_size=[64,64,64]
if [ ! -f "$OUT/pretrain/checkpoint_final.pth" ]; then
  "$M" pretrain "$OUT/prepared" "$OUT/pretrain" --arch resenc-xs --method s3d \
      --patch-size 64 64 64 --batch-size 2 --epochs 8 --iterations 10 --workers 1 --device cpu \
      --set method.mask.block_size=16 --set train.preview_every=4 --resume auto
fi
echo
echo "demo outputs in $OUT:"
echo "  corpus manifest   $OUT/corpus/manifest.json"
echo "  prepared corpus   $OUT/prepared (plan.json, report.json, cases/)"
echo "  pre-training run  $OUT/pretrain (log.csv, progress.png, previews/, checkpoint_final.pth, adaptation_plan.json)"
