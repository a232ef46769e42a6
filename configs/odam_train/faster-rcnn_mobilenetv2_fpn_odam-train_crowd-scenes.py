# Odam-Train Faster R-CNN on the generated crowd scenes: exactly the
# two-stage baseline recipe of ../pretrained/faster-rcnn_mobilenetv2_crowd-person.py
# (same model, data, schedule, seed) with the RoI head's Odam-Train loss of
# _base_/faster-rcnn_mobilenetv2_fpn_odam-train.py (which the baseline drops).
_base_ = ['../pretrained/faster-rcnn_mobilenetv2_crowd-person.py']

model = dict(
    roi_head=dict(
        loss_odam=dict(
            _delete_=True,
            type='OdamTrainLoss',
            loss_weight=0.2,
            iou_weighted=False,
            max_samples=256,
            map_stride=16,
            smoothing='none')))
