# Default person detector of mmdet-odam (checkpoint:
# checkpoints/fcos_mobilenetv2_crowd-person.pth, recipe:
# tools/train_default_models.sh, results: docs/model_zoo.md).
# Train: crowd scenes generated from coco128_train2017 persons
# (data/crowd_scenes/train) + the real coco128 person images.
# Val/test: crowd scenes generated from coco_val2017_tiny80 persons
# (data/crowd_scenes/val, CrowdHumanMetric); the held-out COCO images are
# evaluated with fcos_mobilenetv2_crowd-person_coco-tiny80.py.
_base_ = [
    '../_base_/models/fcos_mobilenetv2_fpn.py',
    '../_base_/datasets/crowd_scenes.py', '../_base_/default_runtime.py'
]
max_iters = 1500
coco_repeat = 5

_scenes = {{_base_.train_dataloader.dataset}}
_coco_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(640, 480), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction', 'scale_factor'))
]
_coco128 = dict(
    type='RepeatDataset',
    times=coco_repeat,
    dataset=dict(
        type='CocoDataset',
        data_root='../shared/data/',
        metainfo=dict(classes=('person', ), palette=[(220, 20, 60)]),
        ann_file='coco128_train2017/annotations/instances_train2017.json',
        data_prefix=dict(img='coco128_train2017/images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=_coco_train_pipeline))
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    dataset=dict(
        _delete_=True, type='ConcatDataset', datasets=[_scenes, _coco128]))

train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=150),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters,
        eta_min=1e-5,
        by_epoch=False,
        begin=0,
        end=max_iters)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
