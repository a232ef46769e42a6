# Faster R-CNN R50-FPN (paper Sec. 4.3: anchors with H:W = 1, 2, 3) on real
# CrowdHuman with classic NMS at IoU 0.5 in the RoI head. The RoI head is
# OdamStandardRoIHead (mmdet's StandardRoIHead plus RoI-index tracking and the
# Odam-NMS path when rcnn.nms.type == 'odam_nms').
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn_person.py',
    '../_base_/datasets/crowdhuman.py', '../_base_/default_runtime.py'
]

model = dict(
    test_cfg=dict(
        rpn=dict(nms_pre=6000, max_per_img=1000),
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=500)))

data_root = 'data/CrowdHuman/'  # as in ../_base_/datasets/crowdhuman.py
_ann = data_root + 'annotation_val.odgt'
val_evaluator = [
    dict(type='CrowdHumanMetric', ann_file=_ann, metric=['AP', 'MR', 'JI'],
         num_ji_process=2),
    dict(type='CrowdRecallMetric', ann_file=_ann),
]
test_evaluator = val_evaluator
