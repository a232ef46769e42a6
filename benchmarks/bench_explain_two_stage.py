"""Faster R-CNN R50-FPN entry of ``benchmarks/bench_explain.py``.

``bench_faster_rcnn()`` returns the ``BENCHMARKS['faster_rcnn']`` entry:

* ``build(device)``: mmdet's ``faster-rcnn_r50_fpn`` model (80 classes,
  standard test cfg: 1000 proposals, ``score_thr=0.05``, 100 detections),
  random weights (timing only). The classifier bias of 5 classes is raised
  by 3 so that, as with a trained model, enough (RoI, class) rows pass
  ``score_thr`` to fill the 100 detections.
* ``loop(model, inputs, samples, n_det)``: the authors' way, one forward
  (FPN levels as leaves, all 1000 RoIs through RoIAlign and the bbox head
  with a graph) and then ONE autograd backward per detection and target to
  the FPN level the RoI was pooled from, followed by the same map
  computation as the batched path (Gaussian smoothing, channel sum, ReLU,
  alignment to the image, min-max). Returns the number of detections done.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_explain.py --detectors
faster_rcnn``.
"""

TARGETS = ('cls', 'left', 'top', 'right', 'bottom')


def faster_rcnn_r50_cfg(num_classes=80):
    """mmdet's ``_base_/models/faster-rcnn_r50_fpn.py`` (model part, no
    pretrained init)."""
    return dict(
        type='FasterRCNN',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
            pad_size_divisor=32),
        backbone=dict(
            type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
            frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True, style='pytorch'),
        neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048],
                  out_channels=256, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=256, feat_channels=256,
            anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                  ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7,
                               sampling_ratio=0),
                out_channels=256, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=256,
                fc_out_channels=1024, roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                target_means=[0., 0., 0., 0.],
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                              loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000,
                     nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type='nms',
                                               iou_threshold=0.5),
                      max_per_img=100)))


def build_faster_rcnn(device):
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    import mmdet_odam  # noqa: F401
    torch.manual_seed(0)
    model = MODELS.build(Config(dict(model=faster_rcnn_r50_cfg())).model)
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.bias[:5] += 3.0
    return model.to(device).eval()


def loop_faster_rcnn(model, inputs, samples, n_det, targets=TARGETS):
    """One autograd backward per detection and target (authors' way)."""
    import torch
    from mmdet.structures.bbox import bbox2roi

    from mmdet_odam.core import (apply_grad_mode, box_sigmas,
                                 gaussian_smooth, level_to_image,
                                 minmax_normalize, odam_raw)
    from mmdet_odam.explainers.base import model_guard
    from mmdet_odam.explainers.targets import Target
    from mmdet_odam.explainers.two_stage import (predict_bbox_with_inds,
                                                 roi_target_values)
    roi_head = model.roi_head
    ext = roi_head.bbox_roi_extractor
    meta = samples[0].metainfo
    sf = meta['scale_factor']
    with model_guard(model):
        with torch.no_grad():
            x = model.extract_feat(inputs)
            rpn = model.rpn_head.predict(x, samples, rescale=False)
            res = predict_bbox_with_inds(roi_head, x, [meta], rpn,
                                         roi_head.test_cfg, rescale=True)[0]
        res = res[:n_det]
        feats = [f.detach().requires_grad_(True) for f in x[:4]]
        rois = bbox2roi([rpn[0].bboxes])
        with torch.enable_grad():  # one forward of all RoIs, with a graph
            cls_score, bbox_pred = roi_head.bbox_head(ext(feats, rois))
        lvls = ext.map_roi_levels(rois, len(feats))
        for i in range(len(res)):
            r, lab = res.roi_inds[i:i + 1], res.labels[i:i + 1]
            lvl = int(lvls[r])
            stride = float(ext.featmap_strides[lvl])
            box = res.bboxes[i:i + 1] * res.bboxes.new_tensor(
                [sf[0], sf[1], sf[0], sf[1]])
            sig = box_sigmas((box[:, 2:] - box[:, :2]) / stride)
            for t in targets:
                with torch.enable_grad():
                    y = roi_target_values(roi_head, cls_score[r],
                                          bbox_pred[r], rois[r], lab,
                                          Target(t))
                    g, = torch.autograd.grad(y[0], feats[lvl],
                                             retain_graph=True)
                g = gaussian_smooth(g, sig)
                m = apply_grad_mode(odam_raw(g, feats[lvl].detach()))
                m = level_to_image(m, stride, meta['img_shape'],
                                   meta['ori_shape'], sf)
                minmax_normalize(m)
        if str(inputs.device).startswith('cuda'):
            torch.cuda.synchronize()
    return len(res)


def bench_faster_rcnn() -> dict:
    """The ``BENCHMARKS['faster_rcnn']`` entry of bench_explain.py."""
    return dict(build=build_faster_rcnn, loop=loop_faster_rcnn)
