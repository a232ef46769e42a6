# Odam-NMS (paper Sec. 3.3, Algorithm 1) on the generated crowd scenes: the
# baseline of ./fcos_mobilenetv2_crowd-scenes_nms.py with the NMS swapped for
# Odam-NMS (IoU 0.5, T_low 0.2, T_high 0.8, Pearson correlation of the cls
# ODAM maps on a grid whose short edge is 50).
#   python tools/test.py \
#       configs/odam_nms/fcos_mobilenetv2_crowd-scenes_odam-nms.py \
#       checkpoints/fcos_mobilenetv2_crowd-person.pth
_base_ = ['./fcos_mobilenetv2_crowd-scenes_nms.py']

model = dict(
    test_cfg=dict(
        nms=dict(
            _delete_=True,
            type='odam_nms',
            iou_threshold=0.5,
            corr_low=0.2,
            corr_high=0.8,
            corr_type='pearson')))
