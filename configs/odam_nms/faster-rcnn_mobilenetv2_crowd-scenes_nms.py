# Two-stage baseline for Odam-NMS on the generated crowd scenes
# (data/crowd_scenes/val): the trained Faster R-CNN MobileNetV2-FPN person
# detector of ../pretrained/faster-rcnn_mobilenetv2_crowd-person.py with
# classic NMS at IoU 0.5 in the RoI head; AP / MR^-2 / JI (CrowdHumanMetric)
# plus crowd/sparse recall at the best-JI score threshold.
#   python tools/test.py configs/odam_nms/faster-rcnn_mobilenetv2_crowd-scenes_nms.py \
#       checkpoints/faster-rcnn_mobilenetv2_crowd-person.pth
_base_ = ['../pretrained/faster-rcnn_mobilenetv2_crowd-person.py']

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
