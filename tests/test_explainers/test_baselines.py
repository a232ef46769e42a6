"""Grad-CAM, Grad-CAM++ and D-RISE baselines."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules

import mmdet_odam  # noqa: F401
from mmdet_odam.core import level_to_image, minmax_normalize, odam_map
from mmdet_odam.explainers.builder import build_explainer
from mmdet_odam.explainers.drise import (drise_saliency, drise_weights,
                                         generate_masks)
from mmdet_odam.explainers.gradcam import gradcam_weights, gradcampp_weights

register_all_modules()


def tiny_fcos():
    cfg = dict(
        type='FCOS',
        data_preprocessor=dict(type='DetDataPreprocessor',
                               mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=dict(type='TinyConvNet', channels=(8, 16, 32, 64, 128),
                      out_indices=(2, 3, 4)),
        neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=32,
                  start_level=0, num_outs=3),
        bbox_head=dict(type='FCOSHead', num_classes=1, in_channels=32,
                       stacked_convs=1, feat_channels=32,
                       strides=[8, 16, 32],
                       regress_ranges=((-1, 32), (32, 64), (64, 1e8))),
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.6),
                      max_per_img=10))
    torch.manual_seed(0)
    return MODELS.build(ConfigDict(cfg)).eval()


def batch(model):
    torch.manual_seed(1)
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    ds = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(48, 64),
                                     scale_factor=(2.0, 2.0),
                                     img_path='toy.jpg'))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[ds]))
    return data['inputs'], data['data_samples']


def test_gradcam_weights_formula():
    torch.manual_seed(0)
    feat = torch.randn(1, 4, 5, 6, requires_grad=True)
    w = torch.randn(4, 5, 6)
    y = (torch.tanh(feat[0]) * w).sum()
    (g, ) = torch.autograd.grad(y, feat)
    cam = odam_map(gradcam_weights(g), feat.detach())
    manual = torch.zeros(5, 6)
    for c in range(4):
        manual += g[0, c].mean() * feat[0, c].detach()
    torch.testing.assert_close(cam[0], manual.clamp(min=0))
    # Grad-CAM++ by hand: one channel, sum(A) = 4, G = [[1, -1], [2, 0]]
    g = torch.tensor([[[[1., -1.], [2., 0.]]]])
    a = torch.ones(1, 1, 2, 2)
    assert gradcampp_weights(g, a).item() == pytest.approx(1 / 6 + 0.2)


def test_gradcam_explainer_is_pooled_odam_gradient():
    """The Grad-CAM map of a detection == ReLU(sum_c mean(dy/dA_c) A_c) on
    the FPN level that produced it, y its score (computed here by hand)."""
    model = tiny_fcos()
    inputs, samples = batch(model)
    exp = build_explainer(model, 'gradcam').explain(inputs, samples,
                                                    score_thr=0.0, topk=2)[0]
    odam = build_explainer(model, 'odam').explain(inputs, samples,
                                                  score_thr=0.0, topk=2)[0]
    # same detections as ODAM
    torch.testing.assert_close(exp.bboxes, odam.bboxes)
    assert exp.method == 'gradcam'
    feats = [f.detach().requires_grad_(True)
             for f in model.extract_feat(inputs)]
    cls, _, ctr = model.bbox_head(feats)
    meta = samples[0].metainfo
    for k in range(len(exp)):
        lvl = int(exp.level_ids[k])
        score = cls[lvl][0, 0].sigmoid() * ctr[lvl][0, 0].sigmoid()
        loc = (score - exp.scores[k]).abs().argmin()
        y = score.reshape(-1)[loc]
        assert float(y) == pytest.approx(float(exp.scores[k]), abs=1e-5)
        (g, ) = torch.autograd.grad(y, feats[lvl], retain_graph=True)
        cam = odam_map(gradcam_weights(g), feats[lvl].detach())
        stride = model.bbox_head.strides[lvl]
        want = minmax_normalize(
            level_to_image(cam, (stride, stride), meta['img_shape'],
                           meta['ori_shape'], meta['scale_factor']))[0]
        torch.testing.assert_close(exp.maps['cls'][k], want, atol=1e-4,
                                   rtol=1e-4)
    # the model is left as it was
    assert all(p.requires_grad for p in model.parameters())


def test_all_methods_explain_given_boxes():
    model = tiny_fcos()
    inputs, samples = batch(model)
    boxes = [torch.tensor([[10., 10., 30., 40.], [30., 5., 60., 45.]])]
    for method, kw in [('gradcampp', {}), ('drise', dict(n_masks=16))]:
        r = build_explainer(model, method, **kw).explain(
            inputs, samples, score_thr=0.0, boxes=boxes,
            labels=[torch.tensor([0, 0])])[0]
        assert r.method == method and r.maps['cls'].shape == (2, 48, 64)
        assert 0 <= r.maps['cls'].min() and r.maps['cls'].max() <= 1
        torch.testing.assert_close(r.bboxes, boxes[0])
    with pytest.raises(ValueError, match='single-stage'):
        build_explainer(torch.nn.Conv2d(1, 1, 1), 'gradcam')
    with pytest.raises(ValueError, match='only target'):
        build_explainer(model, 'drise', targets='cls,left')


def _toy(region, box=(0., 0., 8., 8.)):
    """A 'detector' with one detection whose score is the kept fraction of
    ``region`` (the pixels that drive the score)."""
    calls = []

    def detect(masks):
        calls.append(len(masks))
        s = masks[:, 0][:, region].mean(1)
        return [(torch.tensor([box]), s[i:i + 1], torch.tensor([0]))
                for i in range(len(masks))]

    return detect, calls


def test_drise_recovers_driving_region():
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[20:28, 4:12] = True
    detect, calls = _toy(region)
    sal = drise_saliency(detect, (32, 32), torch.tensor([[0., 0, 8, 8]]),
                         torch.tensor([0]), n_masks=400, cells=8,
                         chunk_size=50)
    assert sal.shape == (1, 32, 32) and calls == [50] * 8
    r, c = divmod(int(sal[0].argmax()), 32)
    assert region[r, c]
    assert sal[0][region].mean() > 1.1 * sal[0][~region].mean()
    m = generate_masks(3, (20, 30), 4, 0.5, torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 20, 30) and 0 <= m.min() and m.max() <= 1


def test_drise_weights_by_hand():
    dets = [(torch.tensor([[0., 0, 10, 10]]), torch.tensor([0.5]),
             torch.tensor([0])),
            (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0).long())]
    w = drise_weights(dets, torch.tensor([[0., 0, 10, 5], [0., 0, 10, 10]]),
                      torch.tensor([0, 1]))
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.0], [0.0, 0.0]]))


def test_drise_resumes_after_interruption(tmp_path):
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[:6, :6] = True
    args = ((16, 16), torch.tensor([[0., 0, 8, 8]]), torch.tensor([0]))
    kw = dict(n_masks=100, cells=4, chunk_size=20, seed=3)
    full = drise_saliency(_toy(region)[0], *args, **kw)

    detect, calls = _toy(region)

    def flaky(masks):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return detect(masks)

    ckpt = str(tmp_path / 'drise.pth')
    with pytest.raises(KeyboardInterrupt):
        drise_saliency(flaky, *args, checkpoint=ckpt, **kw)
    assert torch.load(ckpt, weights_only=True)['done'] == 60
    detect2, calls2 = _toy(region)
    resumed = drise_saliency(detect2, *args, checkpoint=ckpt, **kw)
    assert calls2 == [20, 20]  # only the remaining chunks ran
    torch.testing.assert_close(resumed, full)
    assert not (tmp_path / 'drise.pth').exists()
