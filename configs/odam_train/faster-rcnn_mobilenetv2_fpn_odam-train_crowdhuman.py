# Odam-Train Faster R-CNN on real CrowdHuman (data/CrowdHuman, see
# ../_base_/datasets/crowdhuman.py): the model of
# _base_/faster-rcnn_mobilenetv2_fpn_odam-train.py, 1x schedule (the paper
# trains 30 epochs with ResNet-50).
_base_ = [
    './_base_/faster-rcnn_mobilenetv2_fpn_odam-train.py',
    '../_base_/datasets/crowdhuman.py', '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py'
]
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
