# The default person detector on the small bundled crowd set
# demo/crowd_val_small (12 scenes made from CC BY / CC BY-SA
# coco_val2017_tiny80 persons, see demo/ATTRIBUTION.md), CrowdHumanMetric.
_base_ = ['./fcos_mobilenetv2_crowd-person.py']
_root = 'demo/crowd_val_small/'
val_dataloader = dict(dataset=dict(data_root=_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=_root + 'val/annotation_val.odgt')
test_evaluator = val_evaluator
