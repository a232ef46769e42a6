# FCOS on real CrowdHuman with Odam-NMS (IoU 0.5, T_low 0.2, T_high 0.8;
# paper Sec. 4.3 / Tab. 5): ./fcos_mobilenetv2_crowdhuman_nms.py with the NMS
# swapped.
_base_ = ['./fcos_mobilenetv2_crowdhuman_nms.py']

model = dict(
    test_cfg=dict(
        nms=dict(
            _delete_=True,
            type='odam_nms',
            iou_threshold=0.5,
            corr_low=0.2,
            corr_high=0.8,
            corr_type='pearson')))
