# The two-stage person detector (./faster-rcnn_mobilenetv2_crowd-person.py)
# evaluated on the held-out real COCO images (person class of
# coco_val2017_tiny80, COCO-style AP / AP50).
_base_ = ['./faster-rcnn_mobilenetv2_crowd-person.py']
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root='../shared/data/',
        metainfo=dict(classes=('person', ), palette=[(220, 20, 60)]),
        ann_file='coco_val2017_tiny80/annotations/instances_val2017.json',
        data_prefix=dict(img='coco_val2017_tiny80/images/'),
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    ann_file='../shared/data/'
    'coco_val2017_tiny80/annotations/instances_val2017.json',
    metric='bbox')
test_evaluator = val_evaluator
