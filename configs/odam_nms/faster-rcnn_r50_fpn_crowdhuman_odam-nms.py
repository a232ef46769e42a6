# Faster R-CNN R50-FPN on real CrowdHuman with Odam-NMS in the RoI head
# (IoU 0.5, T_low 0.2, T_high 0.8 as in paper Tab. 5; the authors' R-CNN
# config uses 0.6 / 0.3 / 0.7).
_base_ = ['./faster-rcnn_r50_fpn_crowdhuman_nms.py']

model = dict(
    test_cfg=dict(
        rcnn=dict(
            nms=dict(
                _delete_=True,
                type='odam_nms',
                iou_threshold=0.5,
                corr_low=0.2,
                corr_high=0.8,
                corr_type='pearson'))))
