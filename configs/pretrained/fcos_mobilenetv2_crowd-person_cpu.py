# CPU recipe of the default person detector (docs/model_zoo.md, the
# reproducible CPU pair): ./fcos_mobilenetv2_crowd-person.py (same model,
# data, input size, seed) on a schedule a small CPU runs in about an
# hour with one thread: batch 2, 1000 iterations, AdamW lr 4e-4 (warm-up 100,
# cosine). The Odam-Train twin is
# ../odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu.py.
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/pretrained/fcos_mobilenetv2_crowd-person_cpu.py
_base_ = ['./fcos_mobilenetv2_crowd-person.py']
max_iters = 1000

train_dataloader = dict(batch_size=2, num_workers=1)
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters,
        eta_min=1e-5,
        by_epoch=False,
        begin=0,
        end=max_iters)
]
