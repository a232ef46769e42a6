# Tiny FCOS with Odam-Train on COCO persons (../tiny/fcos_tiny_coco-person.py
# + the consistency / separation losses). Trains a few iterations on a CPU
# in seconds: for tests (resume, 2-process runs) and demos, not accuracy.
_base_ = ['../tiny/fcos_tiny_coco-person.py']

model = dict(
    bbox_head=dict(
        type='OdamFCOSHead',
        loss_odam=dict(
            type='OdamTrainLoss', loss_weight=1.0, max_samples=64,
            map_stride=8)))
