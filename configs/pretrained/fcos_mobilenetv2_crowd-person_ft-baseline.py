# Control run for ./fcos_mobilenetv2_crowd-person_ft-odam-train.py: the
# default person detector (checkpoints/fcos_mobilenetv2_crowd-person.pth)
# fine-tuned for the same short CPU schedule WITHOUT the Odam-Train losses,
# so that the two fine-tuned models differ only by the losses.
#   python tools/train.py configs/pretrained/fcos_mobilenetv2_crowd-person_ft-baseline.py
_base_ = ['./fcos_mobilenetv2_crowd-person.py']

ft_iters = 80
load_from = 'checkpoints/fcos_mobilenetv2_crowd-person.pth'
train_dataloader = dict(batch_size=4, num_workers=1)
train_cfg = dict(max_iters=ft_iters, val_interval=ft_iters + 1)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=40, max_keep_ckpts=2))
