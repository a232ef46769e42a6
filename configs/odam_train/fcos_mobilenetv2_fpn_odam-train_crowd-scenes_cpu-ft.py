# Odam-Train twin of the CPU fine-tune pair
# ../pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py
# (same start checkpoint, data order, seed and schedule) with the Odam-Train
# losses. Loss choices (docs/odam_train_diagnosis.md): each term averaged
# over its own pairs (normalize='balanced': under the paper's common
# normaliser an image of R people has R - 1 separation pairs per
# consistency pair, and training traded consistency for separation),
# separation against the predictions whose boxes overlap the reference's
# (negatives='overlap', the authors' FCOS code) and the authors' FCOS
# weight 0.5.
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py
_base_ = ['../pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py']

model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss',
            loss_weight=0.5,
            reference='object',
            negatives='overlap',
            normalize='balanced',
            min_objects=2,
            max_samples=300,
            map_stride=16,
            smoothing='none')))
