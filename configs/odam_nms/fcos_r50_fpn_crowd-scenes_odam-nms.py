# ./fcos_r50_fpn_crowd-scenes_nms.py with Odam-NMS (IoU 0.5, T_low 0.2,
# T_high 0.8, Pearson), as ./fcos_mobilenetv2_crowd-scenes_odam-nms.py.
_base_ = ['./fcos_r50_fpn_crowd-scenes_nms.py']

model = dict(
    test_cfg=dict(
        nms=dict(
            _delete_=True,
            type='odam_nms',
            iou_threshold=0.5,
            corr_low=0.2,
            corr_high=0.8,
            corr_type='pearson')))
