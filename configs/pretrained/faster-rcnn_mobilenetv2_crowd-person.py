# Two-stage person detector of mmdet-odam: Faster R-CNN with the same
# ImageNet MobileNetV2 backbone (frozen BN) as the default FCOS
# (./fcos_mobilenetv2_crowd-person.py). The model is the one of
# ../odam_train/_base_/faster-rcnn_mobilenetv2_fpn_odam-train.py WITHOUT the
# Odam-Train loss (128-channel FPN, person anchors H:W = 1, 2, 3, 512 RoIs
# with foreground ratio 0.5, OdamStandardRoIHead: candidate tracking and
# Odam-NMS at test time), so the checkpoints of both share their keys.
# Train: the FCOS default's data mix (crowd scenes data/crowd_scenes/train +
# 5 x the coco128 person images) on a CPU-sized schedule: 512x384, batch 2,
# 2250 iterations (1.5 s/it, about 1 h on one CPU thread), AdamW 2e-4,
# linear warmup + cosine. Val/test: data/crowd_scenes/val (CrowdHumanMetric),
# only at the end; COCO person AP with
# ./faster-rcnn_mobilenetv2_crowd-person_coco-tiny80.py.
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/pretrained/faster-rcnn_mobilenetv2_crowd-person.py
_base_ = [
    '../odam_train/_base_/faster-rcnn_mobilenetv2_fpn_odam-train.py',
    '../_base_/datasets/crowd_scenes.py', '../_base_/default_runtime.py'
]
max_iters = 2250
coco_repeat = 5
img_scale = (512, 384)  # CPU: the FCOS default's (640, 480) took 2.0 s/it

model = dict(
    roi_head=dict(loss_odam=None),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.01,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100)))

# data: as ./fcos_mobilenetv2_crowd-person.py, batch 2, img_scale
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction', 'scale_factor'))
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
_scenes = dict(
    type='OdamCrowdHumanDataset',
    data_root='data/crowd_scenes/',
    ann_file='train/annotation_train.odgt',
    extra_ann_file='train/id_hw_train.json',
    data_prefix=dict(img='train/images/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=8),
    pipeline=train_pipeline)
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
        pipeline=train_pipeline))
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    dataset=dict(
        _delete_=True, type='ConcatDataset', datasets=[_scenes, _coco128]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(num_ji_process=1)
test_evaluator = val_evaluator

train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=200),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters,
        eta_min=2e-6,
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
