# The default person detector (checkpoints/fcos_mobilenetv2_crowd-person.pth)
# fine-tuned with the Odam-Train losses (paper Sec. 3.2) for a short CPU
# schedule; ./fcos_mobilenetv2_crowd-person_ft-baseline.py is the same run
# without the losses. (The full-schedule Odam-Train recipe is
# configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py.)
#   python tools/train.py configs/pretrained/fcos_mobilenetv2_crowd-person_ft-odam-train.py
_base_ = ['./fcos_mobilenetv2_crowd-person_ft-baseline.py']

model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=1.0,
            reference='object',
            negatives='all',
            normalize='batch',
            min_objects=2,
            max_samples=300,
            map_stride=16,
            smoothing='none')))
