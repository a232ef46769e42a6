# Odam-Train Faster R-CNN on the generated crowd scenes: the model of
# _base_/faster-rcnn_mobilenetv2_fpn_odam-train.py with the data and schedule
# of ../pretrained/fcos_mobilenetv2_crowd-person.py's scenes part (2000
# iterations, AdamW, cosine).
_base_ = [
    './_base_/faster-rcnn_mobilenetv2_fpn_odam-train.py',
    '../_base_/datasets/crowd_scenes.py', '../_base_/default_runtime.py'
]

max_iters = 2000
train_cfg = dict(
    _delete_=True,
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
        type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
