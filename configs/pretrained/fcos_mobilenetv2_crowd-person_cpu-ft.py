# CPU fine-tune twin pair of the default person detector: the
# default detector ../../checkpoints/fcos_mobilenetv2_crowd-person.pth
# fine-tuned on the generated crowd scenes (data/crowd_scenes/train) on a
# schedule this CPU runs in the background with one thread: batch 2, AdamW
# lr 1e-4 (warm-up 20 iterations, then constant, so that both twins can be
# compared at any common checkpoint), checkpoints every 50 iterations
# (resume with --resume). Its Odam-Train twin
# ../odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py differs
# only by the losses (same data order, seed and schedule).
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py
# or both twins at once: bash tools/train_default_models.sh cpu-ft
# Results: docs/odam_train_diagnosis.md
_base_ = ['./fcos_mobilenetv2_crowd-person.py']
max_iters = 600
load_from = 'checkpoints/fcos_mobilenetv2_crowd-person.pth'

model = dict(backbone=dict(init_cfg=None))
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    dataset=dict(
        _delete_=True,
        type='OdamCrowdHumanDataset',
        data_root='data/crowd_scenes/',
        ann_file='train/annotation_train.odgt',
        extra_ann_file='train/id_hw_train.json',
        data_prefix=dict(img='train/images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline={{_base_.train_pipeline}}))
train_cfg = dict(max_iters=max_iters, val_interval=10**6)  # no validation
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=50, max_keep_ckpts=20))
