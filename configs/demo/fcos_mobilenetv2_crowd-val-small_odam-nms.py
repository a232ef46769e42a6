# `make demo`, step 2: the same detector and data as
# ./fcos_mobilenetv2_crowd-val-small_nms.py with Odam-NMS (paper Algorithm 1).
_base_ = ['./fcos_mobilenetv2_crowd-val-small_nms.py']

model = dict(
    test_cfg=dict(
        nms=dict(
            _delete_=True,
            type='odam_nms',
            iou_threshold=0.5,
            corr_low=0.2,
            corr_high=0.8,
            corr_type='pearson')))
