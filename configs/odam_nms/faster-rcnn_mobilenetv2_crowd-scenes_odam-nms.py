# Odam-NMS in the RoI head of the trained Faster R-CNN MobileNetV2-FPN person
# detector (./faster-rcnn_mobilenetv2_crowd-scenes_nms.py with the NMS
# swapped: IoU 0.5, T_low 0.2, T_high 0.8, Pearson correlation of the cls
# ODAM maps of the RoIs).
#   python tools/test.py \
#       configs/odam_nms/faster-rcnn_mobilenetv2_crowd-scenes_odam-nms.py \
#       checkpoints/faster-rcnn_mobilenetv2_crowd-person.pth
_base_ = ['./faster-rcnn_mobilenetv2_crowd-scenes_nms.py']

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
