# FCOS R50-FPN (the paper's detector: mmdet's fcos_r50-caffe_fpn_gn-head,
# 4 GN convs per tower, 256 channels) as a person detector on the generated
# crowd scenes, classic NMS. Same data / evaluation as
# ./fcos_mobilenetv2_crowd-scenes_nms.py; no weights are shipped (train it on
# a GPU with tools/train.py, or time it with random weights:
#   python benchmarks/bench_nms.py --config \
#       configs/odam_nms/fcos_r50_fpn_crowd-scenes_odam-nms.py
_base_ = ['./fcos_mobilenetv2_crowd-scenes_nms.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='caffe',
        init_cfg=None),
    neck=dict(
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        centerness_on_reg=False,
        norm_on_bbox=False,
        center_sampling=False))
