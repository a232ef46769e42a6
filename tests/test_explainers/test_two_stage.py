"""Batched two-stage ODAM (Faster R-CNN) against per-detection autograd."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData

register_all_modules()
import mmdet_odam  # noqa: E402,F401
from mmdet_odam.core import (box_sigmas, gaussian_smooth,  # noqa: E402
                             level_to_image, level_to_padded,
                             minmax_normalize, odam_map)
from mmdet_odam.explainers import build_explainer  # noqa: E402
from mmdet_odam.explainers.generic import GenericExplainer  # noqa: E402
from mmdet_odam.explainers.two_stage import (  # noqa: E402
    TwoStageExplainer, level_window_maps, roi_align_adjoint,
    roi_candidate_maps)
from mmdet_odam.explainers.targets import MapOptions  # noqa: E402

TARGETS = ['cls', 'left', 'top', 'right', 'bottom']


def frcnn_cfg(roi_head='StandardRoIHead', nms=None, num_classes=3):
    return dict(
        type='FasterRCNN',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
            pad_size_divisor=32),
        backbone=dict(
            type='ResNet', depth=18, base_channels=8, num_stages=4,
            out_indices=(0, 1, 2, 3), frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
            style='pytorch'),
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16,
                  num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=16, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', scales=[16],
                                  ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
            loss_bbox=dict(type='L1Loss')),
        roi_head=dict(
            type=roi_head,
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7,
                               sampling_ratio=0),
                out_channels=16, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                roi_feat_size=7, num_classes=num_classes,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                target_means=[0.] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False),
                loss_bbox=dict(type='L1Loss'))),
        train_cfg=None,
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=30,
                     nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05,
                      nms=nms or dict(type='nms', iou_threshold=0.5),
                      max_per_img=12)))


def build(seed=0, **kw):
    from mmengine.config import Config
    torch.manual_seed(seed)
    model = MODELS.build(Config(dict(model=frcnn_cfg(**kw))).model)
    model.eval()
    return model


# proposals (input pixels, 200x300 image): several FPN levels, borders
PROPOSALS = torch.tensor([[0., 0., 40., 40.], [150., 60., 300., 200.],
                          [0., 0., 300., 200.], [260., 150., 300., 200.],
                          [20., 30., 120., 160.], [100., 10., 180., 70.],
                          [5., 120., 70., 198.], [200., 0., 290., 90.]])


def batch(model, proposals=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 255, (3, 200, 300), generator=g).float()
    ds = DetDataSample(metainfo=dict(
        img_shape=(200, 300), ori_shape=(100, 150), scale_factor=(2.0, 2.0),
        pad_shape=(224, 320), batch_input_shape=(224, 320)))
    if proposals:
        ds.proposals = InstanceData(bboxes=PROPOSALS.clone(),
                                    scores=torch.ones(len(PROPOSALS)))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[ds]),
                                   False)
    return data['inputs'], data['data_samples']


@pytest.fixture(scope='module')
def model():
    return build()


def decode(model, rois, labels, deltas, max_shape=None):
    head = model.roi_head.bbox_head
    d = deltas.view(len(labels), -1, 4)[torch.arange(len(labels)), labels]
    return head.bbox_coder.decode(rois[:, 1:], d, max_shape=max_shape)


def clipped_rows(expl, target, ori_shape):
    """(K,) rows whose ``target`` coordinate predict clipped to the image
    border (no gradient: an empty map)."""
    if target == 'cls':
        return torch.zeros(len(expl), dtype=torch.bool)
    j = TARGETS.index(target) - 1
    edge = (0.0, 0.0, float(ori_shape[1]), float(ori_shape[0]))[j]
    return (expl.bboxes[:, j] - edge).abs() < 1e-3


def reference_maps(model, inputs, samples, expl, target, smoothing):
    """One full-level autograd backward per detection (whole FPN level as a
    leaf, mmdet's own RoI extractor / head / box coder)."""
    meta = samples[0].metainfo
    with torch.no_grad():
        x = model.extract_feat(inputs)
    x = [f.detach().requires_grad_(True) for f in x]
    ext = model.roi_head.bbox_roi_extractor
    props = samples[0].proposals.bboxes
    out = []
    for k in range(len(expl)):
        rois = bbox2roi([props[expl.candidate_inds[k:k + 1]]])
        lvl = int(ext.map_roi_levels(rois, 4)[0])
        stride = ext.featmap_strides[lvl]
        with torch.enable_grad():
            cls, deltas = model.roi_head.bbox_head(ext(x[:4], rois))
            lab = expl.labels[k:k + 1]
            if target == 'cls':
                y = cls.softmax(-1)[0, lab]
            else:  # the reported box: clipped to the image, as predict
                box = decode(model, rois, lab, deltas, meta['img_shape'])[0]
                j = TARGETS.index(target) - 1
                y = (-1 if j < 2 else 1) * box[j]
            g = torch.autograd.grad(y.sum(), x[lvl], allow_unused=True)[0]
            g = torch.zeros_like(x[lvl]) if g is None else g
        if smoothing == 'gaussian':
            b = expl.bboxes[k:k + 1] * 2  # input pixels
            g = gaussian_smooth(g, box_sigmas((b[:, 2:] - b[:, :2]) / stride))
        h = odam_map(g, x[lvl].detach())
        out.append(level_to_image(h, stride, meta['img_shape'],
                                  meta['ori_shape'], meta['scale_factor']))
    return minmax_normalize(torch.cat(out))


@pytest.mark.parametrize('smoothing', ['gaussian', 'none'])
def test_batched_equals_per_detection_autograd(model, smoothing):
    inputs, samples = batch(model)
    with torch.no_grad():
        pred = model.predict(inputs, samples)[0].pred_instances
    ex = TwoStageExplainer(model, targets=TARGETS + ['combined'],
                           smoothing=smoothing)
    e = ex.explain(inputs, samples, score_thr=0.0)[0]
    # the detections are exactly the detector's
    assert torch.allclose(e.bboxes, pred.bboxes)
    assert torch.allclose(e.scores, pred.scores)
    assert torch.equal(e.labels, pred.labels)
    assert len(e) >= 6 and len(set(e.level_ids.tolist())) >= 2
    if smoothing == 'gaussian':  # the kernel is really used
        s = box_sigmas((e.bboxes[:, 2:] - e.bboxes[:, :2]) * 2 / 4)
        assert (s > 0).any()
    for t in TARGETS:
        ref = reference_maps(model, inputs, samples, e, t, smoothing)
        err = (ref - e.maps[t]).abs().amax((1, 2))
        assert err.max() < 1e-4, (t, err)
        clip = clipped_rows(e, t, (100, 150))
        assert (e.maps[t].amax((1, 2))[~clip] > 0.999).all()
        assert (e.maps[t][clip] == 0).all()
    comb = torch.stack([e.maps[t] for t in TARGETS]).amax(0)
    assert torch.equal(comb, e.maps['combined'])
    assert e.maps['cls'].shape == (len(e), 100, 150)


def test_cls_equals_generic_full_model_autograd(model):
    """Reference through mmdet's own predict (hooked neck, one backward per
    detection)."""
    inputs, samples = batch(model)
    e = TwoStageExplainer(model, targets=['cls']).explain(
        inputs, samples, score_thr=0.0)[0]
    g = GenericExplainer(model, targets=['cls'], chunk_size=1).explain(
        inputs, samples, score_thr=0.0)[0]
    assert torch.allclose(e.bboxes, g.bboxes)
    assert (e.maps['cls'] - g.maps['cls']).abs().max() < 1e-4


def test_roi_align_adjoint_equals_mmcv_backward(model):
    torch.manual_seed(1)
    layer = model.roi_head.bbox_roi_extractor.roi_layers[1]  # stride 8
    feat = torch.randn(2, 3, 12, 17, requires_grad=True)
    rois = torch.tensor([[0, 0., 0., 40., 30.], [1, 100., 50., 136., 96.],
                         [0, 3., 7., 11., 9.], [1, 90., 60., 200., 120.]])
    g = torch.randn(4, 3, 7, 7)
    (ref, ) = torch.autograd.grad(layer(feat, rois), feat, g)
    adj = roi_align_adjoint(layer, g, rois, feat.shape)
    assert torch.allclose(adj, ref, atol=1e-6)
    # adjoint of the adjoint (create_graph) is RoIAlign itself
    g.requires_grad_(True)
    a = torch.randn(2, 3, 12, 17)
    (dg, ) = torch.autograd.grad((roi_align_adjoint(layer, g, rois,
                                                    feat.shape) * a).sum(), g)
    assert torch.allclose(dg, layer(a, rois), atol=1e-5)
    # windowed maps == maps on the whole level, also at borders
    img_inds = rois[:, 0].long()
    sig = torch.tensor([1.2, 0.0, 0.7, 2.0])
    feat2 = torch.randn(2, 3, 12, 17)
    got = torch.zeros(4, 1, 12, 17)
    for inds, win, y0, x0 in level_window_maps(
            layer, feat2, img_inds, rois[:, 1:], g.detach()[:, None], sig,
            'abs', chunk_bytes=1):  # one RoI per chunk
        for j, i in enumerate(inds.tolist()):
            hp, wp = win.shape[-2:]
            got[i, :, y0[j]:y0[j] + hp, x0[j]:x0[j] + wp] = win[j]
    per_roi = [
        roi_align_adjoint(layer, g.detach()[i:i + 1],
                          torch.cat([torch.zeros(1), rois[i, 1:]])[None],
                          (1, 3, 12, 17)) for i in range(4)
    ]
    full = gaussian_smooth(torch.cat(per_roi), sig)
    want = odam_map(full, feat2[img_inds], 'abs')
    assert torch.allclose(got[:, 0], want, atol=1e-5)


def test_roi_candidate_maps(model):
    inputs, samples = batch(model)
    e = TwoStageExplainer(model, targets=['cls']).explain(
        inputs, samples, score_thr=0.0)[0]
    x = [f.detach() for f in model.extract_feat(inputs)]
    rois = bbox2roi([samples[0].proposals.bboxes[e.candidate_inds]])
    boxes = e.bboxes * 2
    out = roi_candidate_maps(model.roi_head, x, rois, e.labels,
                             out_size=(28, 40), boxes=boxes,
                             pad_shape=(224, 320))
    assert out.shape == (len(e), 28, 40) and (out >= 0).all()
    # differentiable w.r.t. feats (A) and, with create_graph, the head
    xs = [f.clone().requires_grad_(True) for f in x]
    head_w = model.roi_head.bbox_head.fc_cls.weight
    assert head_w.requires_grad
    m = roi_candidate_maps(model.roi_head, xs, rois, e.labels,
                           out_size=(28, 40),
                           options=MapOptions(create_graph=True))
    gx = torch.autograd.grad(m.sum(), [xs[0], head_w], allow_unused=True)
    assert gx[0] is not None and gx[0].abs().sum() > 0
    assert gx[1] is not None and gx[1].abs().sum() > 0


def test_roi_candidate_maps_render_matches_level_maps(model):
    inputs, samples = batch(model)
    e = TwoStageExplainer(model, targets=['left'], smoothing='none').explain(
        inputs, samples, score_thr=0.0)[0]
    x = [f.detach() for f in model.extract_feat(inputs)]
    k = 0
    rois = bbox2roi([samples[0].proposals.bboxes[e.candidate_inds[k:k + 1]]])
    out = roi_candidate_maps(model.roi_head, x, rois, e.labels[k:k + 1],
                             out_size=(56, 80),
                             options=MapOptions('left', smoothing='none'),
                             pad_shape=(224, 320))
    xs = [f.clone().requires_grad_(True) for f in x]
    ext = model.roi_head.bbox_roi_extractor
    lvl = int(ext.map_roi_levels(rois, 4)[0])
    with torch.enable_grad():
        _, d = model.roi_head.bbox_head(ext(xs[:4], rois))
        y = -decode(model, rois, e.labels[k:k + 1], d)[0, 0]
        g = torch.autograd.grad(y, xs[lvl])[0]
    ref = level_to_padded(odam_map(g, x[lvl]), ext.featmap_strides[lvl],
                          (224, 320), (56, 80))
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.max()))


def test_roi_layer_maps_inside_roi(model):
    inputs, samples = batch(model)
    e = TwoStageExplainer(model, targets=['cls', 'top'], layer='roi').explain(
        inputs, samples, score_thr=0.0)[0]
    assert e.layer == 'roi'
    boxes = samples[0].proposals.bboxes[e.candidate_inds] / 2  # original px
    ys = torch.arange(100)[:, None] + 0.5
    xs = torch.arange(150)[None] + 0.5
    for k in range(len(e)):
        b = boxes[k]
        inside = (xs >= b[0]) & (xs <= b[2]) & (ys >= b[1]) & (ys <= b[3])
        for t in ('cls', 'top'):
            m = e.maps[t][k]
            assert (m[~inside] == 0).all()
            if clipped_rows(e, t, (100, 150))[k]:
                assert (m == 0).all()  # a clipped coordinate: no gradient
            else:
                assert m[inside].max() > 0.999


def test_given_boxes_and_empty(model):
    inputs, samples = batch(model)
    ex = TwoStageExplainer(model, targets=['cls'])
    e = ex.explain(inputs, samples, score_thr=0.0)[0]
    # a detection's own box (and class) is explained through its own RoI
    g = ex.explain(inputs, samples, boxes=[e.bboxes[:3]],
                   labels=[e.labels[:3]])[0]
    assert torch.equal(g.candidate_inds, e.candidate_inds[:3])
    assert torch.allclose(g.maps['cls'], e.maps['cls'][:3], atol=1e-6)
    with pytest.raises(ValueError, match='outside the image'):
        ex.explain(inputs, samples, boxes=[torch.tensor([[0., 0, 160, 50]])])
    empty = ex.explain(inputs, samples, score_thr=1.0)[0]
    assert len(empty) == 0 and empty.maps['cls'].shape == (0, 100, 150)


def test_model_left_unchanged_also_on_error(model):
    m = copy.deepcopy(model)
    m.train()
    m.backbone.conv1.weight.requires_grad_(False)
    flags = {n: mod.training for n, mod in m.named_modules()}
    req = {n: p.requires_grad for n, p in m.named_parameters()}
    inputs, samples = batch(m)
    ex = TwoStageExplainer(m, targets=['combined'])
    ex.explain(inputs, samples, score_thr=0.0)
    with pytest.raises(ValueError):
        ex.explain(inputs, samples, boxes=[torch.tensor([[10., 10, 5, 5]])])
    assert {n: mod.training for n, mod in m.named_modules()} == flags
    assert {n: p.requires_grad for n, p in m.named_parameters()} == req
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
        assert not mod._backward_hooks


def test_build_explainer_and_bad_layer(model):
    assert isinstance(build_explainer(model), TwoStageExplainer)
    with pytest.raises(ValueError, match='fpn_level'):
        TwoStageExplainer(model, layer='no_such_layer')
    # a module name takes the exact autograd path on the same detections
    inputs, samples = batch(model)
    e = TwoStageExplainer(model, targets=['cls'], layer='neck').explain(
        inputs, samples, score_thr=0.0)[0]
    f = TwoStageExplainer(model, targets=['cls']).explain(
        inputs, samples, score_thr=0.0)[0]
    assert torch.allclose(e.maps['cls'], f.maps['cls'], atol=1e-4)


def test_odam_standard_roi_head():
    plain = build(seed=3)
    odam = build(seed=3, roi_head='OdamStandardRoIHead')
    odam.load_state_dict(plain.state_dict())
    inputs, samples = batch(plain, proposals=False, seed=2)
    with torch.no_grad():
        a = plain.predict(inputs, copy.deepcopy(samples))[0].pred_instances
        b = odam.predict(inputs, copy.deepcopy(samples))[0].pred_instances
        x = plain.extract_feat(inputs)
        rpn = plain.rpn_head.predict(x, samples, rescale=False)[0]
        cls, _ = plain.roi_head.bbox_head(
            plain.roi_head.bbox_roi_extractor(x[:4], bbox2roi([rpn.bboxes])))
    assert torch.allclose(a.bboxes, b.bboxes) and torch.equal(a.labels,
                                                               b.labels)
    # roi_inds point at the RoI whose score is reported
    assert torch.allclose(cls.softmax(-1)[b.roi_inds, b.labels], b.scores)
    assert odam.roi_head.loss_odam is None
    # Odam-NMS: candidate maps, kept rows carry their maps
    nms = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.2,
               corr_high=0.8)
    on = build(seed=3, roi_head='OdamStandardRoIHead', nms=nms)
    on.load_state_dict(plain.state_dict())
    with torch.no_grad():
        c = on.predict(inputs, copy.deepcopy(samples))[0].pred_instances
    assert len(c) > 0 and c.odam_maps.shape[0] == len(c)
    assert c.odam_maps.shape[1:] == (50, 75)
    assert (c.scores[:-1] >= c.scores[1:]).all()
    assert torch.allclose(cls.softmax(-1)[c.roi_inds, c.labels], c.scores)


@pytest.mark.parametrize('sf', [(2.0, 2.0), (1.37, 1.52), (0.8, 0.8)])
def test_window_rendering_equals_full_level(sf):
    """Rendering only the pixels a window reaches == level_to_image of the
    whole level (zero elsewhere), windows inside and at the borders."""
    from mmdet_odam.explainers.two_stage import render_windows_on_image
    torch.manual_seed(0)
    h, w, stride = 13, 17, 8.0
    ori = (int(h * stride / sf[1]) - 3, int(w * stride / sf[0]) - 5)
    img_shape = (round(ori[0] * sf[1]), round(ori[1] * sf[0]))
    win = torch.rand(4, 2, 5, 6)
    y0 = torch.tensor([0, 4, 8, 3])
    x0 = torch.tensor([0, 5, 11, 11])
    part, r0, c0 = render_windows_on_image(win, y0, x0, stride, (h, w),
                                           img_shape, ori, sf)
    got = torch.zeros(4, 2, *ori)
    rr, cc = part.shape[-2:]
    for i in range(4):
        got[i, :, r0[i]:r0[i] + rr, c0[i]:c0[i] + cc] = part[i]
    full = torch.zeros(4, 2, h, w)
    for i in range(4):
        full[i, :, y0[i]:y0[i] + 5, x0[i]:x0[i] + 6] = win[i]
    want = level_to_image(full.reshape(8, h, w), stride, img_shape, ori,
                          sf).reshape(4, 2, *ori)
    assert torch.allclose(got, want, atol=1e-6)


def test_batch_of_two_images_equals_single(model):
    a_in, a_s = batch(model, seed=0)
    b_in, b_s = batch(model, seed=1)
    inputs = torch.cat([a_in, b_in])
    ex = TwoStageExplainer(model, targets=['cls', 'bottom'])
    both = ex.explain(inputs, a_s + b_s, score_thr=0.0, topk=4)
    one = ex.explain(b_in, b_s, score_thr=0.0, topk=4)[0]
    assert torch.equal(both[1].candidate_inds, one.candidate_inds)
    for t in ('cls', 'bottom'):
        assert torch.allclose(both[1].maps[t], one.maps[t], atol=1e-5)
