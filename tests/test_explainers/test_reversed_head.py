"""The reversed head (tower backward from the recorded forward) == the
patch path (re-forward of every candidate's window), values and
gradients; it is what Odam-NMS and Odam-Train run."""
import copy

import pytest
import torch

from mmdet_odam.explainers.base import model_guard
from mmdet_odam.explainers.dense import dense_candidate_maps
from mmdet_odam.explainers.reversed_head import (forward_recording,
                                                 reversed_head_spec)
from mmdet.registry import MODELS
from odam_tiny_models import build_detector, detector_cfg, fake_batch
from test_dense_equivalence import candidates, rel_err


def _detector(kind, gn, centerness_on_reg=True):
    model = build_detector(kind, gn=gn)
    if kind == 'fcos' and not centerness_on_reg:
        model.bbox_head.centerness_on_reg = False
    return model.double()


@pytest.mark.parametrize('kind,gn,ctr_on_reg', [
    ('fcos', True, True), ('fcos', False, False), ('fcos', True, False),
    ('retina', False, True), ('atss', True, True), ('atss', False, True)])
def test_reversed_head_equals_patch_path(kind, gn, ctr_on_reg):
    model = _detector(kind, gn, ctr_on_reg)
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    cands = candidates(model, inputs, samples)
    assert reversed_head_spec(model.bbox_head) is not None
    with model_guard(model):
        with torch.no_grad():
            feats = model.extract_feat(inputs)
        for smoothing, mode in [('gaussian', 'pos_relu'), ('none', 'abs'),
                                ('gaussian', 'pos_norelu')]:
            kw = dict(target='cls', out_size=(40, 56), smoothing=smoothing,
                      grad_mode=mode, pad_shape=inputs.shape[-2:])
            fast = dense_candidate_maps(model.bbox_head, feats, *cands,
                                        reversed_head=True, **kw)
            ref = dense_candidate_maps(model.bbox_head, feats, *cands,
                                       reversed_head=False, **kw)
            assert fast.shape == ref.shape == (len(cands[0]), 40, 56)
            assert (ref.flatten(1).abs().max(1).values > 0).sum() > 5
            assert rel_err(fast, ref) < 1e-6, (smoothing, mode)


@pytest.mark.parametrize('kind', ['fcos', 'atss'])
def test_reversed_head_gradients_equal_patch_path(kind):
    """create_graph=True (Odam-Train): d loss / d (head weights, features)
    are the same on both paths: the recorded forward freezes the GN
    statistics like the patch path's re-forward (``freeze_norm``)."""
    model = _detector(kind, gn=True)
    model.train()
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    model.eval()
    cands = candidates(model, inputs, samples, n=6)
    model.train()
    head = model.bbox_head
    with torch.no_grad():
        base = [f.detach() for f in model.extract_feat(inputs)]
    w = torch.rand(len(cands[0]), 24, 32, dtype=torch.double)
    grads = []
    for rev in (True, False):
        feats = [f.clone().requires_grad_(True) for f in base]
        record = None
        if rev:
            _, record = forward_recording(head, feats, freeze_norm=True)
        maps = dense_candidate_maps(head, feats, *cands, target='cls',
                                    out_size=(24, 32), create_graph=True,
                                    pad_shape=inputs.shape[-2:],
                                    record=record, reversed_head=rev)
        params = [p for p in head.parameters()]
        g = torch.autograd.grad((maps * w).sum(), params + feats,
                                allow_unused=True)
        grads.append([torch.zeros_like(x) if gi is None else gi
                      for gi, x in zip(g, params + feats)])
    used = 0
    for a, b in zip(*grads):
        scale = max(a.abs().max().item(), b.abs().max().item())
        if scale > 0:
            used += 1
            assert (a - b).abs().max().item() <= 1e-6 * scale
    assert used > 10  # towers, prediction convs, GN gamma, features


def test_odam_nms_predict_uses_the_recorded_forward():
    """Odam-NMS maps of ``predict`` (one head forward, recorded) equal the
    patch path's maps of the same candidates."""
    model = _detector('fcos', gn=True)
    model.bbox_head.test_cfg['nms'] = dict(type='odam_nms', iou_threshold=0.5,
                                        corr_low=0.2, corr_high=0.8)
    inputs, samples = fake_batch(model)
    inputs = inputs.double()
    calls = []
    handle = model.bbox_head.cls_convs[0].register_forward_hook(
        lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            res = model.predict(inputs, copy.deepcopy(samples))[0]
    finally:
        handle.remove()
    assert len(calls) == 5  # the 5 levels, once: no second forward
    p = res.pred_instances
    assert len(p) > 0 and p.odam_maps.shape[0] == len(p)
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        ref = dense_candidate_maps(
            model.bbox_head, feats, torch.zeros_like(p.labels), p.level_ids,
            p.loc_inds, p.labels, 'cls', out_size=p.odam_maps.shape[-2:],
            boxes=p.input_bboxes, pad_shape=samples[0].batch_input_shape,
            reversed_head=False)
    assert rel_err(p.odam_maps.double(), ref) < 1e-9
    assert not model.bbox_head._forward_hooks
    assert not model.bbox_head.cls_convs[0]._forward_hooks


def test_unsupported_heads_fall_back_or_raise():
    cfg = detector_cfg('fcos', gn=False)
    cfg['bbox_head']['dcn_on_last_conv'] = True  # DCN: not a plain conv
    model = MODELS.build(cfg).eval()
    assert reversed_head_spec(model.bbox_head) is None
    inputs, samples = fake_batch(model)
    with torch.no_grad():
        feats = model.extract_feat(inputs)
    one = [torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
           torch.tensor([7]), torch.zeros(1, dtype=torch.long)]
    with pytest.raises(NotImplementedError, match='reversed head'):
        dense_candidate_maps(model.bbox_head, feats, *one, target='cls',
                             out_size=(8, 8), reversed_head=True)
    # a box target takes the patch path
    other = build_detector('fcos')
    with torch.no_grad():
        feats = other.extract_feat(inputs)
    with pytest.raises(NotImplementedError, match='reversed head'):
        dense_candidate_maps(other.bbox_head, feats, *one, target='left',
                             out_size=(8, 8), reversed_head=True)
    out = dense_candidate_maps(other.bbox_head, feats, *one, target='left',
                               out_size=(8, 8))
    assert out.shape == (1, 8, 8) and torch.isfinite(out).all()
