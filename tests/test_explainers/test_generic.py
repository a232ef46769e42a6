"""Generic (autograd) ODAM on DETR and RTMDet, and its guarantees."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules

register_all_modules()
import mmdet_odam  # noqa: E402,F401
from mmdet_odam.core import (box_sigmas, gaussian_smooth,  # noqa: E402
                             level_to_image, minmax_normalize, odam_map)
from mmdet_odam.explainers import build_explainer  # noqa: E402
from mmdet_odam.explainers.generic import (GenericExplainer,  # noqa: E402
                                           autograd_maps, infer_stride)

PRE = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)
TARGETS = ['cls', 'left', 'top', 'right', 'bottom']


def detr_cfg():
    attn = dict(embed_dims=16, num_heads=2, dropout=0.0, batch_first=True)
    ffn = dict(embed_dims=16, feedforward_channels=32, num_fcs=2,
               ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))
    return dict(
        type='DETR', num_queries=8, data_preprocessor=PRE,
        backbone=dict(type='ResNet', depth=18, base_channels=8,
                      num_stages=4, out_indices=(3, ), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=False),
                      norm_eval=True, style='pytorch'),
        neck=dict(type='ChannelMapper', in_channels=[64], kernel_size=1,
                  out_channels=16, act_cfg=None, norm_cfg=None, num_outs=1),
        encoder=dict(num_layers=1,
                     layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
        decoder=dict(num_layers=1,
                     layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn,
                                    ffn_cfg=ffn),
                     return_intermediate=True),
        positional_encoding=dict(num_feats=8, normalize=True),
        bbox_head=dict(type='DETRHead', num_classes=3, embed_dims=16,
                       loss_cls=dict(type='CrossEntropyLoss',
                                     bg_cls_weight=0.1, use_sigmoid=False,
                                     class_weight=1.0),
                       loss_bbox=dict(type='L1Loss'),
                       loss_iou=dict(type='GIoULoss')),
        test_cfg=dict(max_per_img=8))


def rtmdet_cfg():
    act = dict(type='SiLU', inplace=True)
    return dict(
        type='RTMDet', data_preprocessor=PRE,
        backbone=dict(type='CSPNeXt', arch='P5', expand_ratio=0.5,
                      deepen_factor=0.167, widen_factor=0.125,
                      channel_attention=True, norm_cfg=dict(type='BN'),
                      act_cfg=act),
        neck=dict(type='CSPNeXtPAFPN', in_channels=[32, 64, 128],
                  out_channels=16, num_csp_blocks=1, expand_ratio=0.5,
                  norm_cfg=dict(type='BN'), act_cfg=act),
        bbox_head=dict(
            type='RTMDetSepBNHead', num_classes=3, in_channels=16,
            stacked_convs=1, feat_channels=16,
            anchor_generator=dict(type='MlvlPointGenerator', offset=0,
                                  strides=[8, 16, 32]),
            bbox_coder=dict(type='DistancePointBBoxCoder'),
            loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True,
                          beta=2.0),
            loss_bbox=dict(type='GIoULoss'), with_objectness=False,
            exp_on_reg=False, share_conv=True, pred_kernel_size=1,
            norm_cfg=dict(type='BN'), act_cfg=act),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.65),
                      max_per_img=8))


def build(cfg, seed=0):
    from mmengine.config import Config
    torch.manual_seed(seed)
    model = MODELS.build(Config(dict(model=cfg)).model)
    model.eval()
    return model


def batch(model, n=1):
    g = torch.Generator().manual_seed(0)
    imgs, samples = [], []
    for i in range(n):
        imgs.append(torch.randint(0, 255, (3, 96, 128), generator=g).float())
        samples.append(DetDataSample(metainfo=dict(
            img_shape=(96, 128), ori_shape=(48, 64), scale_factor=(2.0, 2.0),
            pad_shape=(96, 128))))
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples),
                                   False)
    return data['inputs'], data['data_samples']


@pytest.fixture(scope='module', params=['detr', 'rtmdet'])
def detector(request):
    cfg = dict(detr=detr_cfg, rtmdet=rtmdet_cfg)[request.param]()
    return request.param, build(cfg)


def manual_maps(model, inputs, samples, expl, target, layer='neck'):
    """One backward per detection through mmdet's predict (own hook).

    ``layer='encoder'``: gradients w.r.t. the encoder's memory tokens
    (B, N, C), put back on the (single) neck level's grid here."""
    store, tokens, shape = [], [], []

    def hook(mod, inp, out):
        leaves = [o.detach().requires_grad_(True) for o in out]
        store.extend(leaves)
        return type(out)(leaves)

    def neck_shape(mod, inp, out):
        shape[:] = list(out[0].shape[-2:])

    def token_hook(mod, inp, out):
        leaf = out.detach().requires_grad_(True)
        tokens.append(leaf)
        return leaf

    if layer == 'encoder':
        hs = [model.neck.register_forward_hook(neck_shape),
              model.encoder.register_forward_hook(token_hook)]
    else:
        hs = [model.neck.register_forward_hook(hook)]

    class _All:
        def remove(self):
            for x in hs:
                x.remove()

    h = _All()
    from mmdet_odam.explainers.generic import keep_head_grads
    try:
        with torch.enable_grad(), keep_head_grads():
            res = model.predict(inputs, samples)[0]
    finally:
        h.remove()
    inst = res.pred_instances
    order = torch.argsort(inst.scores.detach(), descending=True)
    out = []
    for k in order[:len(expl)].tolist():
        if target == 'cls':
            y = inst.scores[k]
        else:
            j = TARGETS.index(target) - 1
            y = (-1 if j < 2 else 1) * 2.0 * inst.bboxes[k, j]
        if layer == 'encoder':
            (g, ) = torch.autograd.grad(y, tokens, retain_graph=True)
            c = g.shape[-1]
            pairs = [(g.transpose(1, 2).reshape(1, c, *shape),
                      tokens[0].transpose(1, 2).reshape(1, c, *shape))]
        else:
            gs = torch.autograd.grad(y, store, retain_graph=True,
                                     allow_unused=True)
            pairs = list(zip(gs, store))
        total = 0
        for g, a in pairs:
            if g is None:
                continue
            s = infer_stride(96, a.shape[-2])
            b = inst.bboxes[k:k + 1].detach() * 2
            g = gaussian_smooth(g, box_sigmas((b[:, 2:] - b[:, :2]) / s))
            total = total + level_to_image(odam_map(g, a.detach()), s,
                                           (96, 128), (48, 64), (2.0, 2.0))
        out.append(total)
    return minmax_normalize(torch.cat(out))


def test_batched_equals_per_detection_loop(detector):
    name, model = detector
    inputs, samples = batch(model)
    with torch.no_grad():
        pred = model.predict(inputs, copy.deepcopy(samples))[0]
    ex = GenericExplainer(model, targets=TARGETS + ['combined'],
                          chunk_size=4)
    e = ex.explain(inputs, samples, score_thr=0.0, topk=5)[0]
    loop = GenericExplainer(model, targets=TARGETS, chunk_size=1).explain(
        inputs, samples, score_thr=0.0, topk=5)[0]
    assert len(e) == 5 and e.maps['cls'].shape == (5, 48, 64)
    layer = 'encoder' if name == 'detr' else 'neck'  # DETR: memory tokens
    assert e.layer == layer
    top = pred.pred_instances.scores.argsort(descending=True)[:5]
    assert torch.allclose(e.scores, pred.pred_instances.scores[top])
    for t in TARGETS:
        assert (e.maps[t] - loop.maps[t]).abs().max() < 1e-4, t
        ref = manual_maps(model, inputs, samples, e, t, layer)
        assert (e.maps[t] - ref).abs().max() < 1e-4, t
    # not all-zero: the targets really reach the layer
    assert (e.maps['cls'].amax((1, 2)) > 0.999).all()
    comb = torch.stack([e.maps[t] for t in TARGETS]).amax(0)
    assert torch.equal(comb, e.maps['combined'])
    if name == 'detr':
        assert isinstance(build_explainer(model), GenericExplainer)


def test_batch_of_two_images_equals_single(detector):
    _, model = detector
    inputs, samples = batch(model, n=2)
    ex = GenericExplainer(model, targets=['cls'])
    both = ex.explain(inputs, samples, score_thr=0.0, topk=3)
    one = ex.explain(inputs[1:], samples[1:], score_thr=0.0, topk=3)[0]
    assert torch.allclose(both[1].maps['cls'], one.maps['cls'], atol=1e-4)


def test_errors_and_model_unchanged():
    model = build(detr_cfg())
    model.train()
    model.bbox_head.fc_cls.weight.requires_grad_(False)
    flags = {n: m.training for n, m in model.named_modules()}
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    inputs, samples = batch(model)
    with pytest.raises(ValueError, match='Unknown layer'):
        GenericExplainer(model, layer='nope')
    # the score does not depend on the box branch: error, not a zero map
    with pytest.raises(ValueError, match='do not depend'):
        GenericExplainer(model, targets=['cls'],
                         layer='bbox_head.fc_reg').explain(
                             inputs, samples, score_thr=0.0)
    with pytest.raises(ValueError, match='outside the image'):
        GenericExplainer(model).explain(
            inputs, samples, boxes=[torch.tensor([[0., 0., 90., 20.]])])
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    # a backbone stage works too; given boxes pick the best detection
    model.eval()
    e = GenericExplainer(model, targets=['cls'],
                         layer='backbone.layer3').explain(
                             inputs, samples, score_thr=0.0, topk=2)[0]
    assert e.layer == 'backbone.layer3' and (e.maps['cls'].amax((1, 2))
                                               > 0.999).all()
    g = GenericExplainer(model, targets=['cls'],
                         layer='backbone.layer3').explain(
                             inputs, samples, boxes=[e.bboxes[:1]])[0]
    assert torch.allclose(g.maps['cls'], e.maps['cls'][:1], atol=1e-5)
    empty = GenericExplainer(model).explain(inputs, samples, score_thr=1.0)
    assert len(empty[0]) == 0


def test_autograd_maps_hand_computed():
    """y_k = sum(w_k * A) -> G = w_k, map = relu(sum_c w_k * A)."""
    a = torch.randn(1, 2, 4, 6, requires_grad=True)
    w = torch.randn(3, 2, 4, 6)
    ys = (w * a).sum((1, 2, 3))
    pieces = autograd_maps(ys, [a], torch.zeros(3, dtype=torch.long),
                           (16, 24), smoothing='none', chunk_size=2)
    got = torch.zeros(3, 4, 6)
    for rows, stride, m in pieces:
        assert stride == (4.0, 4.0)
        got[rows] = m
    assert torch.allclose(got, (w * a.detach()).sum(1).relu(), atol=1e-6)
    with pytest.raises(ValueError, match='do not depend'):
        b = torch.randn(1, 2, 4, 6, requires_grad=True)
        autograd_maps(ys, [b], torch.zeros(3, dtype=torch.long), (16, 24),
                      smoothing='none')


def test_cascade_rcnn_uses_exact_path():
    """Unsupported RoI heads (cascade) take the generic path through
    ``build_explainer``; its maps equal a per-detection loop."""
    from test_two_stage import frcnn_cfg
    cfg = frcnn_cfg()
    roi = cfg['roi_head']
    head = roi['bbox_head']
    cfg.update(type='CascadeRCNN')
    cfg['roi_head'] = dict(
        type='CascadeRoIHead', num_stages=2, stage_loss_weights=[1, 0.5],
        bbox_roi_extractor=roi['bbox_roi_extractor'],
        bbox_head=[head, copy.deepcopy(head)])
    model = build(cfg)
    inputs, samples = batch(model)
    ex = build_explainer(model, targets=['cls', 'right'])
    e = ex.explain(inputs, samples, score_thr=0.0, topk=4)[0]
    loop = GenericExplainer(model, targets=['cls', 'right'],
                            chunk_size=1).explain(inputs, samples,
                                                  score_thr=0.0, topk=4)[0]
    assert len(e) == 4 and e.layer == 'neck'
    for t in ('cls', 'right'):
        assert (e.maps[t] - loop.maps[t]).abs().max() < 1e-4
        assert (e.maps[t].amax((1, 2)) > 0.999).all()
