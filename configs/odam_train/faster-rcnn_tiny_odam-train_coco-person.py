# Tiny Faster R-CNN with Odam-Train on COCO persons
# (../tiny/faster-rcnn_tiny_coco-person.py + the consistency / separation
# losses on the cls ODAM maps of the positive RoIs). For tests and demos.
_base_ = ['../tiny/faster-rcnn_tiny_coco-person.py']

model = dict(
    roi_head=dict(
        type='OdamStandardRoIHead',
        loss_odam=dict(
            type='OdamTrainLoss', loss_weight=0.2, max_samples=64,
            map_stride=8)))
