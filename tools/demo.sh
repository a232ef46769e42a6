#!/usr/bin/env bash
# Placeholder demo: trains the tiny FCOS for a few iterations on CPU and
# evaluates the checkpoint. (The explanation demo replaces this later.)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=${WORK_DIR:-work_dirs/demo}
CONFIG=configs/tiny/fcos_tiny_coco-person.py
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

$PYTHON tools/train.py "$CONFIG" --work-dir "$WORK" \
    --cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20 \
    default_hooks.checkpoint.interval=20
$PYTHON tools/test.py "$CONFIG" "$WORK/iter_20.pth" --work-dir "$WORK" \
    --out "$WORK/predictions.pkl"
echo "demo: checkpoint $WORK/iter_20.pth, predictions $WORK/predictions.pkl"
