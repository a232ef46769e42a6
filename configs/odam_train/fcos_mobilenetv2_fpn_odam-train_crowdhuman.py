# Odam-Train FCOS on real CrowdHuman (data/CrowdHuman, see
# ../_base_/datasets/crowdhuman.py): the light MobileNetV2-FPN FCOS with the
# consistency / separation losses; 1x schedule (the paper trains 30 epochs
# with ResNet-50). Maps at (padded input / 16) like the authors (short edge
# 50 for 800-pixel inputs); at most 300 samples per image.
_base_ = [
    '../_base_/models/fcos_mobilenetv2_fpn.py',
    '../_base_/datasets/crowdhuman.py', '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py'
]

model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=1.0,
            max_samples=300,
            map_stride=16,
            smoothing='none')))
optim_wrapper = dict(
    optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
