# Control arm of the small Odam-Train experiment in docs/odam_train.md:
# 30 AdamW steps (lr 2e-4, constant) from checkpoints/fcos_mobilenetv2_crowd-person.pth
# on the generated train scenes at 320x240 (batch 2, no workers), WITHOUT
# the Odam-Train losses. The other arm is
# fcos_mobilenetv2_fpn_odam-train_crowd-scenes_ft30.py (same everything +
# the losses). Evaluate both with
#   python benchmarks/bench_train.py --discrimination \
#     plain=configs/pretrained/fcos_mobilenetv2_crowd-person.py:WORK_DIR/iter_30.pth ...
_base_ = ['../../pretrained/fcos_mobilenetv2_crowd-person.py']
load_from = 'checkpoints/fcos_mobilenetv2_crowd-person.pth'
max_iters = 30
train_cfg = dict(max_iters=max_iters, val_interval=1000, val_begin=1000)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=2e-4))
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=10, max_keep_ckpts=5))
_pipe = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(320, 240), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction', 'scale_factor'))
]
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='OdamCrowdHumanDataset',
        data_root='data/crowd_scenes/',
        ann_file='train/annotation_train.odgt',
        extra_ann_file='train/id_hw_train.json',
        data_prefix=dict(img='train/images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=_pipe))
