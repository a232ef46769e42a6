# Odam-Train (paper Sec. 3.2) on the generated crowd scenes: exactly the
# baseline recipe of ../pretrained/fcos_mobilenetv2_crowd-person.py (same
# data, schedule, seed) plus the consistency / separation losses on the cls
# ODAM maps of the FCOS positives (mmdet_odam/losses/odam_train_loss.py).
# loss_weight 1.0 with the paper's batch normalisation ~ the authors' FCOS
# (0.5 x sum over 2 images of per-image means); maps on a (padded input / 16)
# grid; at most 300 samples (highest IoU) per image, like the authors.
_base_ = ['../pretrained/fcos_mobilenetv2_crowd-person.py']

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
