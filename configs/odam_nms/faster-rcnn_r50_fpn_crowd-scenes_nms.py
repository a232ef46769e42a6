# Faster R-CNN R50-FPN (anchors H:W = 1, 2, 3) on the generated crowd scenes
# (data/crowd_scenes/val) with classic NMS at IoU 0.5 in the RoI head.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn_person.py',
    '../_base_/datasets/crowd_scenes.py', '../_base_/default_runtime.py'
]

model = dict(
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=300)))

data_root = 'data/crowd_scenes/'  # as in ../_base_/datasets/crowd_scenes.py
_ann = data_root + 'val/annotation_val.odgt'
val_evaluator = [
    dict(type='CrowdHumanMetric', ann_file=_ann, metric=['AP', 'MR', 'JI'],
         num_ji_process=1),
    dict(type='CrowdRecallMetric', ann_file=_ann),
]
test_evaluator = val_evaluator
