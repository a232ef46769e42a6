# Odam-Train twin of the CPU recipe ../pretrained/fcos_mobilenetv2_crowd-person_cpu.py
# (same model, data, schedule, seed) with the losses of
# ./fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py.
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu.py
_base_ = ['../pretrained/fcos_mobilenetv2_crowd-person_cpu.py']

model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=1.0,
            reference='object',
            negatives='all',
            normalize='batch',
            min_objects=2,
            max_samples=300,
            map_stride=16,
            smoothing='none')))
