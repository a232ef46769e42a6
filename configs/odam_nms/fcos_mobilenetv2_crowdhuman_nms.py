# FCOS (MobileNetV2-FPN person detector) on real CrowdHuman
# (data/CrowdHuman/annotation_val.odgt + Images/, mmdet's layout) with
# classic NMS at IoU 0.5: the "NMS" rows of paper Tab. 5 / Tab. 7.
# Full-body boxes; test scale 1400x800 as CrowdDet; up to 500 detections
# (authors' FCOS config).
_base_ = [
    '../_base_/models/fcos_mobilenetv2_fpn.py',
    '../_base_/datasets/crowdhuman.py', '../_base_/default_runtime.py'
]

model = dict(
    backbone=dict(init_cfg=None),  # weights come from the test checkpoint
    bbox_head=dict(type='OdamFCOSHead'),
    test_cfg=dict(
        nms_pre=1000,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=500))

data_root = 'data/CrowdHuman/'  # as in ../_base_/datasets/crowdhuman.py
_ann = data_root + 'annotation_val.odgt'
val_evaluator = [
    dict(type='CrowdHumanMetric', ann_file=_ann, metric=['AP', 'MR', 'JI'],
         num_ji_process=2),
    dict(type='CrowdRecallMetric', ann_file=_ann),
]
test_evaluator = val_evaluator
