# Baseline for Odam-NMS (paper Tab. 5 / Tab. 7 "NMS" rows) on the generated
# crowd scenes (tools/dataset_converters/make_crowd.py, data/crowd_scenes/val)
# with the default person detector checkpoints/fcos_mobilenetv2_crowd-person.pth
# (same model as ../pretrained/fcos_mobilenetv2_crowd-person.py; the head is
# OdamFCOSHead, which only adds candidate tracking when nms.type == 'nms').
# Classic NMS at IoU 0.5; AP / MR^-2 / JI (mmdet CrowdHumanMetric) plus
# crowd/sparse recall at the best-JI score threshold (CrowdRecallMetric).
#   python tools/test.py configs/odam_nms/fcos_mobilenetv2_crowd-scenes_nms.py \
#       checkpoints/fcos_mobilenetv2_crowd-person.pth
_base_ = ['../pretrained/fcos_mobilenetv2_crowd-person.py']

model = dict(
    bbox_head=dict(type='OdamFCOSHead'),
    test_cfg=dict(
        nms_pre=1000,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=300))

data_root = 'data/crowd_scenes/'  # as in ../_base_/datasets/crowd_scenes.py
_ann = data_root + 'val/annotation_val.odgt'
val_evaluator = [
    dict(type='CrowdHumanMetric', ann_file=_ann, metric=['AP', 'MR', 'JI'],
         num_ji_process=1),
    dict(type='CrowdRecallMetric', ann_file=_ann),
]
test_evaluator = val_evaluator
