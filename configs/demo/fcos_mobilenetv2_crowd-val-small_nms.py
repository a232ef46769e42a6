# `make demo`, step 2: the default person detector with classic NMS on the
# small generated crowd set bundled in demo/crowd_val_small (made from
# coco_val2017_tiny80 persons, held out from training).
_base_ = ['../odam_nms/fcos_mobilenetv2_crowd-scenes_nms.py']

data_root = 'demo/crowd_val_small/'
_ann = data_root + 'val/annotation_val.odgt'
test_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root))
val_dataloader = test_dataloader
val_evaluator = [
    dict(type='CrowdHumanMetric', ann_file=_ann, metric=['AP', 'MR', 'JI'],
         num_ji_process=1),
    dict(type='CrowdRecallMetric', ann_file=_ann),
]
test_evaluator = val_evaluator
