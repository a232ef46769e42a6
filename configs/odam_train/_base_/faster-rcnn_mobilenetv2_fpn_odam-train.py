# Faster R-CNN with Odam-Train (model only): the person Faster R-CNN of
# ../../_base_/models/faster-rcnn_r50_fpn_person.py (mmdet 3.3's
# faster-rcnn_r50_fpn, one class, person anchors H:W = 1, 2, 3, paper
# Sec. 4.3) with the ImageNet MobileNetV2 backbone of
# ../../_base_/models/fcos_mobilenetv2_fpn.py (strides 8/16/32, converted
# weights in work_dirs/pretrained, see docs/data.md) and a 128-channel FPN,
# 512 RoIs with foreground ratio 0.5 (authors, CrowdHuman), and the
# consistency / separation losses on the cls ODAM maps of the positive RoIs.
# loss_weight 0.2 as the authors' R-CNN code; their IoU weighting of positive
# pairs is `iou_weighted=True` (paper default: off); maps at padded input / 16
# (their training "dam size", P4); up to 256 positive RoIs per image.
_base_ = ['../../_base_/models/faster-rcnn_r50_fpn_person.py']

pretrained = 'work_dirs/pretrained/mobilenet_v2_imagenet_mmdet.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        out_indices=(2, 4, 6),
        act_cfg=dict(type='ReLU6'),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[32, 96, 320], out_channels=128, num_outs=4),
    rpn_head=dict(
        in_channels=128,
        feat_channels=128,
        anchor_generator=dict(strides=[8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=128, featmap_strides=[8, 16, 32]),
        bbox_head=dict(in_channels=128, fc_out_channels=512),
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=0.2,
            iou_weighted=False,
            max_samples=256,
            map_stride=16,
            smoothing='none')),
    train_cfg=dict(rcnn=dict(sampler=dict(pos_fraction=0.5))))
