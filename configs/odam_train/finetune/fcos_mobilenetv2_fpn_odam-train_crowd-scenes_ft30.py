# Odam-Train arm of the small experiment in docs/odam_train.md: exactly
# fcos_mobilenetv2_fpn_plain_crowd-scenes_ft30.py + the losses.
_base_ = ['./fcos_mobilenetv2_fpn_plain_crowd-scenes_ft30.py']
model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=1.0,
            max_samples=300,
            map_stride=16,
            smoothing='none')))
