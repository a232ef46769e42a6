"""Tiny random mmdet detectors for explanation tests (CPU, seconds)."""
import copy

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules

register_all_modules()
import mmdet_odam  # noqa: E402,F401

PRE = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)
BACKBONE = dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                out_indices=(1, 2, 3), frozen_stages=-1,
                norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
                style='pytorch')
NECK = dict(type='FPN', in_channels=[16, 32, 64], out_channels=16,
            start_level=0, add_extra_convs='on_output', num_outs=5,
            relu_before_extra_convs=True)
TEST_CFG = dict(nms_pre=200, min_bbox_size=0, score_thr=0.0,
                nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)


def head_cfg(kind='fcos', gn=False, num_classes=3, stacked_convs=2):
    norm = dict(type='GN', num_groups=4, requires_grad=True) if gn else None
    common = dict(num_classes=num_classes, in_channels=16, feat_channels=16,
                  stacked_convs=stacked_convs)
    if kind == 'fcos':
        return dict(type='OdamFCOSHead', strides=[8, 16, 32, 64, 128],
                    norm_cfg=norm, norm_on_bbox=True, centerness_on_reg=True,
                    **common)
    anchor = dict(type='AnchorGenerator', octave_base_scale=4,
                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                  strides=[8, 16, 32, 64, 128])
    coder = dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                 target_stds=[1.0, 1.0, 1.0, 1.0])
    if kind == 'retina':
        return dict(type='OdamRetinaHead', anchor_generator=anchor,
                    bbox_coder=coder, norm_cfg=norm, **common)
    if kind == 'atss':
        anchor = dict(type='AnchorGenerator', ratios=[1.0],
                      octave_base_scale=8, scales_per_octave=1,
                      strides=[8, 16, 32, 64, 128])
        coder = dict(type='DeltaXYWHBBoxCoder',
                     target_means=[.0, .0, .0, .0],
                     target_stds=[0.1, 0.1, 0.2, 0.2])
        return dict(type='OdamATSSHead', anchor_generator=anchor,
                    bbox_coder=coder,
                    norm_cfg=norm or dict(type='GN', num_groups=4),
                    **common) if gn else dict(
                        type='OdamATSSHead', anchor_generator=anchor,
                        bbox_coder=coder, norm_cfg=None, **common)
    raise ValueError(kind)


def detector_cfg(kind='fcos', gn=False, num_classes=3):
    det = dict(fcos='FCOS', retina='RetinaNet', atss='ATSS')[kind]
    # copies: a test that edits its model's test_cfg leaves the others alone
    return copy.deepcopy(
        dict(type=det, data_preprocessor=PRE, backbone=BACKBONE, neck=NECK,
             bbox_head=head_cfg(kind, gn, num_classes), test_cfg=TEST_CFG))


def build_detector(kind='fcos', gn=False, seed=0, std=0.1, num_classes=3):
    torch.manual_seed(seed)
    model = MODELS.build(detector_cfg(kind, gn, num_classes))
    with torch.no_grad():  # random head weights large enough to matter
        for name, p in model.bbox_head.named_parameters():
            if p.dim() == 4:
                p.normal_(0, std)
            elif 'bias' in name:
                p.normal_(0, 0.1)
            elif 'gn' in name or 'norm' in name or p.dim() == 1:
                p.uniform_(0.5, 1.5)
    model.eval()
    return model


def fake_batch(model, shape=(70, 100), seed=0, n=1):
    """Preprocessed (inputs, data_samples) for random images of ``shape``."""
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for _ in range(n):
        img = rng.integers(0, 255, (3, *shape), dtype=np.uint8)
        inputs.append(torch.from_numpy(img))
        ds = DetDataSample()
        ds.set_metainfo(dict(img_shape=shape, ori_shape=shape,
                             scale_factor=(1.0, 1.0), img_path=None))
        samples.append(ds)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   False)
    return data['inputs'], data['data_samples']
