"""DenseHeadExplainer: results, alignment, sanity check, guards, errors."""
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample

import mmdet_odam.explainers.dense as dense_mod
from mmdet_odam.explainers import DenseHeadExplainer, build_explainer
from mmdet_odam.explainers.dense import receptive_radius
from odam_tiny_models import build_detector, fake_batch


def scaled_batch(model, ori=(140, 200), scale=0.5, seed=0):
    """A non-square image resized by ``scale`` and padded to 32."""
    h, w = int(ori[0] * scale), int(ori[1] * scale)
    rng = np.random.default_rng(seed)
    img = torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8))
    ds = DetDataSample()
    ds.set_metainfo(dict(img_shape=(h, w), ori_shape=ori,
                         scale_factor=(scale, scale), img_path='x.png'))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[ds]),
                                   False)
    return data['inputs'], data['data_samples']


def test_explanations_shapes_and_combined():
    model = build_detector('fcos')
    inputs, samples = scaled_batch(model)
    exp = DenseHeadExplainer(model, targets='cls,left,combined').explain(
        inputs, samples, score_thr=0.0, topk=7)[0]
    assert len(exp) == 7 and exp.ori_shape == (140, 200)
    assert set(exp.maps) == {'cls', 'left', 'combined'}
    for m in exp.maps.values():
        assert m.shape == (7, 140, 200)
        assert m.min() >= 0 and m.max() <= 1
    assert (exp.maps['combined'] >= exp.maps['cls'] - 1e-6).all()
    assert (exp.maps['combined'] >= exp.maps['left'] - 1e-6).all()
    assert (exp.scores[:-1] >= exp.scores[1:]).all()
    assert exp.bboxes.shape == (7, 4) and exp.layer == 'fpn_level'
    arrays = exp.to_numpy()
    assert arrays['maps_cls'].shape == (7, 140, 200)


@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_maps_aligned_with_candidate_cell(kind):
    """Padding and resize undone: each map lies within the receptive field of
    its candidate's cell, mapped back to original pixels."""
    model = build_detector(kind)
    inputs, samples = scaled_batch(model)
    exp = DenseHeadExplainer(model, smoothing='none').explain(
        inputs, samples, score_thr=0.0, topk=60)[0]
    head = model.bbox_head
    r = receptive_radius(head)
    a = head.num_base_priors
    with torch.no_grad():
        feats = model.extract_feat(inputs)
    yy, xx = torch.meshgrid(torch.arange(140) + 0.5, torch.arange(200) + 0.5,
                            indexing='ij')
    res = model.predict(inputs, samples)[0].pred_instances
    checked = 0
    for k in range(len(exp)):
        m = exp.maps['cls'][k]
        if m.max() <= 0:
            continue
        lvl = int(exp.level_ids[k])
        s = 8 * 2**lvl
        w = feats[lvl].shape[-1]
        j = (res.cand_inds == exp.candidate_inds[k]).nonzero()[0, 0]
        cell = int(res.loc_inds[j]) // a
        cy, cx = (cell // w + 0.5) * s / 0.5, (cell % w + 0.5) * s / 0.5
        dist = torch.maximum((yy - cy).abs(), (xx - cx).abs())
        far = dist > (r + 1) * s / 0.5
        if far.any():
            assert m[far].max() == 0, (k, lvl)
        # and the map is not empty near the cell
        assert m[dist <= (r + 1) * s / 0.5].max() == 1
        checked += 1
    assert checked >= 5


def test_given_box_in_corner_of_padded_image():
    """A box in the bottom-right corner of a non-square, resized and padded
    image gets its map in that corner (smoothing off, level 0)."""
    model = build_detector('fcos')
    inputs, samples = scaled_batch(model)
    box = [160., 110., 196., 138.]  # original pixels
    exp = DenseHeadExplainer(model, smoothing='none').explain(
        inputs, samples, boxes=[torch.tensor([box])])[0]
    assert torch.allclose(exp.bboxes[0], torch.tensor(box))
    m = exp.maps['cls'][0]
    assert m.max() == 1
    ys, xs = (m > 0).nonzero(as_tuple=True)
    lvl = int(exp.level_ids[0])
    reach = (receptive_radius(model.bbox_head) + 1) * 8 * 2**lvl / 0.5
    # support around the matched candidate; for level 0 that is the corner
    if lvl == 0:
        assert ys.min() > 140 - 2 * reach and xs.min() > 200 - 2 * reach - 40


def test_randomised_weights_change_maps():
    """Paper App. A.5.1 sanity check: cascading randomisation of the head
    changes the explanation of the same box."""
    model = build_detector('fcos')
    inputs, samples = scaled_batch(model)
    boxes = [torch.tensor([[20., 20., 90., 100.], [100., 30., 180., 120.]])]
    before = DenseHeadExplainer(model).explain(inputs, samples,
                                               boxes=boxes)[0]
    torch.manual_seed(123)
    with torch.no_grad():
        for p in model.bbox_head.parameters():
            if p.dim() == 4:
                p.normal_(0, 0.1)
    after = DenseHeadExplainer(model).explain(inputs, samples,
                                              boxes=boxes)[0]
    a = before.maps['cls'].flatten(1)
    b = after.maps['cls'].flatten(1)
    corr = torch.nn.functional.cosine_similarity(a - a.mean(1, True),
                                                 b - b.mean(1, True))
    assert (corr < 0.9).all(), corr


def test_model_restored_after_exception(monkeypatch):
    model = build_detector('fcos', gn=True)
    model.train()
    model.backbone.eval()
    model.neck.fpn_convs[0].conv.weight.requires_grad_(False)
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    inputs, samples = fake_batch(model)
    calls = []

    def boom(*a, **k):
        calls.append(1)
        raise RuntimeError('boom mid-way')

    monkeypatch.setattr(dense_mod, 'apply_grad_mode', boom)
    with pytest.raises(RuntimeError, match='boom'):
        DenseHeadExplainer(model).explain(inputs, samples, score_thr=0.0)
    assert calls
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks
    assert flags == {n: m.training for n, m in model.named_modules()}
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}


def test_no_detections_gives_empty_result():
    model = build_detector('retina')
    inputs, samples = scaled_batch(model)
    exp = DenseHeadExplainer(model, targets=['cls', 'combined']).explain(
        inputs, samples, score_thr=1.0)[0]
    assert len(exp) == 0 and exp.maps['combined'].shape == (0, 140, 200)


def test_errors():
    model = build_detector('fcos')
    inputs, samples = scaled_batch(model)
    with pytest.raises(ValueError, match='valid names: cls, left'):
        DenseHeadExplainer(model, targets=['cls', 'width'])
    with pytest.raises(ValueError, match='valid names: .*backbone.*neck'):
        DenseHeadExplainer(model, layer='backbone.layer9')
    with pytest.raises(ValueError, match='grad_mode'):
        DenseHeadExplainer(model, grad_mode='both')
    with pytest.raises(ValueError, match='smoothing'):
        DenseHeadExplainer(model, smoothing='box')
    exp = DenseHeadExplainer(model)
    with pytest.raises(ValueError, match='score_thr'):
        exp.explain(inputs, samples, score_thr=1.5)
    with pytest.raises(ValueError, match='outside the image'):
        exp.explain(inputs, samples, boxes=[torch.tensor([[0, 0, 250, 50]])])
    # the data preprocessor is not run by explain(): nothing depends on it
    with pytest.raises(ValueError, match='do not depend|not used'):
        DenseHeadExplainer(model, layer='data_preprocessor').explain(
            inputs, samples, score_thr=0.0, topk=2)
    with pytest.raises(ValueError, match='Unknown explanation method'):
        build_explainer(model, method='lime')


def test_layers_neck_and_backbone_exact_path():
    model = build_detector('fcos', gn=True)
    inputs, samples = scaled_batch(model)
    kw = dict(score_thr=0.0, topk=4)
    own = DenseHeadExplainer(model, exact=True).explain(inputs, samples,
                                                        **kw)[0]
    neck = DenseHeadExplainer(model, layer='neck').explain(
        inputs, samples, **kw)[0]
    # only the detection's own level has a gradient: neck == own level
    assert torch.allclose(own.maps['cls'], neck.maps['cls'], atol=1e-5)
    bb = DenseHeadExplainer(model, layer='backbone.layer3',
                            targets='cls,top')
    bb = bb.explain(inputs, samples, **kw)[0]
    assert bb.layer == 'backbone.layer3'
    assert bb.maps['top'].shape == (4, 140, 200)
    assert (bb.maps['cls'].flatten(1).max(1).values > 0).all()
    assert not torch.allclose(bb.maps['cls'], own.maps['cls'])
    assert isinstance(build_explainer(model), DenseHeadExplainer)
