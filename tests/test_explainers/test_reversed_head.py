"""The reversed head (tower backward from the recorded forward) == the
patch path (re-forward of every candidate's window), values and
gradients; it is what Odam-NMS and Odam-Train run."""
import copy

import pytest
import torch

from mmdet_odam.core import Candidates
from mmdet_odam.explainers.base import model_guard
from mmdet_odam.explainers.dense import dense_candidate_maps
from mmdet_odam.explainers.targets import MapOptions
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
            kw = dict(out_size=(40, 56), pad_shape=inputs.shape[-2:],
                      options=MapOptions('cls', smoothing, mode))
            fast = dense_candidate_maps(model.bbox_head, feats, cands,
                                        reversed_head=True, **kw)
            ref = dense_candidate_maps(model.bbox_head, feats, cands,
                                       reversed_head=False, **kw)
            assert fast.shape == ref.shape == (len(cands), 40, 56)
            assert (ref.flatten(1).abs().max(1).values > 0).sum() > 5
            assert rel_err(fast, ref) < 1e-6, (smoothing, mode)
        # given boxes (Odam-NMS): sigmoid heads take the closed-form score
        # coefficients instead of autograd
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(len(cands), 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 8 + torch.rand(
            len(cands), 2, generator=g) * 60], 1).double()
        kw = dict(out_size=(40, 56), pad_shape=inputs.shape[-2:])
        boxed = cands.with_bboxes(boxes)
        fast = dense_candidate_maps(model.bbox_head, feats, boxed,
                                    reversed_head=True, **kw)
        ref = dense_candidate_maps(model.bbox_head, feats, boxed,
                                   reversed_head=False, **kw)
        assert rel_err(fast, ref) < 1e-6


@pytest.mark.parametrize('kind,ctr_on_reg', [('fcos', True),
                                              ('fcos', False),
                                              ('retina', True),
                                              ('atss', True)])
def test_closed_form_score_coefficients_equal_autograd(kind, ctr_on_reg):
    from mmdet_odam.explainers.reversed_head import (
        _score_coefficients, _sigmoid_score_coefficients, _sigmoid_scores)
    model = _detector(kind, True, ctr_on_reg)
    inputs, samples = fake_batch(model, n=2)
    cands = candidates(model, inputs.double(), samples)
    head = model.bbox_head
    assert _sigmoid_scores(head)
    with torch.no_grad():
        feats = model.extract_feat(inputs.double())
        outs, rec = forward_recording(head, feats)
    img, lvl, loc, labels = (cands.img_inds, cands.level_ids, cands.loc_inds,
                             cands.labels)
    a = head.num_base_priors
    cells = loc // a
    sizes = [f.shape[-2] * f.shape[-1] for f in feats]
    rows = torch.tensor([0] + sizes).cumsum(0)[lvl] + cells
    towers = reversed_head_spec(head)
    ref, _ = _score_coefficients(head, outs, towers, img, rows, loc % a,
                                 labels, None, None, False, False)
    needed = sorted({k for t in towers for k, _ in t.preds})
    table, cols = rec.table(feats, towers, needed)  # logits in the table
    got = _sigmoid_score_coefficients(head, towers, table, cols, img, rows,
                                      loc % a, labels)
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert torch.allclose(got[k], ref[k], rtol=1e-12, atol=1e-15), k
        # one non-zero per candidate: its logit / its factor
        assert ((got[k] != 0).sum(1) <= 1).all()


def test_group_rstd_batched_equals_per_input():
    from mmdet_odam.explainers.reversed_head import group_rstd_batched
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 8, h, w, generator=g) * s + m
          for h, w, s, m in [(5, 7, 1., 0.), (3, 4, 10., 5.), (1, 1, .1, 2.),
                             (2, 9, 3., -4.)]]
    for fused in (True, False):
        got = group_rstd_batched(xs, 4, 1e-5, fused=fused)
        assert got.shape == (4, 2, 4)
        for x, r in zip(xs, got):
            var = x.reshape(2, 4, -1).var(-1, unbiased=False)
            assert torch.allclose(r, torch.rsqrt(var + 1e-5), rtol=1e-5)


@pytest.mark.parametrize('kind,recording', [
    ('fcos', 'frozen'), ('atss', 'frozen'), ('fcos', 'none'),
    ('atss', 'none'), ('fcos', 'plain'), ('fcos_nonorm', 'plain')])
def test_reversed_head_gradients_equal_patch_path(kind, recording):
    """create_graph=True (Odam-Train): d loss / d (head weights, features)
    are the same on both paths, whatever the record: a frozen-statistics
    forward (``freeze_norm``), none (a forward without autograd; the
    scores are re-computed on the candidates' windows with frozen
    statistics) or the plain forward with autograd (the training
    forward itself)."""
    gn = not kind.endswith('_nonorm')
    kind = kind.replace('_nonorm', '')
    model = _detector(kind, gn=gn)
    model.train()
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    model.eval()
    cands = candidates(model, inputs, samples, n=6)
    model.train()
    head = model.bbox_head
    with torch.no_grad():
        base = [f.detach() for f in model.extract_feat(inputs)]
    w = torch.rand(len(cands), 24, 32, dtype=torch.double)
    grads = []
    for rev in (True, False):
        feats = [f.clone().requires_grad_(True) for f in base]
        record = None
        if rev and recording != 'none':
            _, record = forward_recording(
                head, feats, freeze_norm=recording == 'frozen')
        maps = dense_candidate_maps(head, feats, cands,
                                    out_size=(24, 32),
                                    options=MapOptions(create_graph=True),
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
            model.bbox_head, feats,
            Candidates.of_image(p.level_ids, p.loc_inds, p.labels,
                                p.input_bboxes),
            out_size=p.odam_maps.shape[-2:],
            pad_shape=samples[0].batch_input_shape, reversed_head=False)
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
    one = Candidates.of_image(torch.zeros(1, dtype=torch.long),
                              torch.tensor([7]),
                              torch.zeros(1, dtype=torch.long))
    with pytest.raises(NotImplementedError, match='reversed head'):
        dense_candidate_maps(model.bbox_head, feats, one,
                             out_size=(8, 8), reversed_head=True)
    # a box target takes the patch path
    other = build_detector('fcos')
    with torch.no_grad():
        feats = other.extract_feat(inputs)
    with pytest.raises(NotImplementedError, match='reversed head'):
        dense_candidate_maps(other.bbox_head, feats, one, out_size=(8, 8),
                             options=MapOptions('left'), reversed_head=True)
    out = dense_candidate_maps(other.bbox_head, feats, one, out_size=(8, 8),
                               options=MapOptions('left'))
    assert out.shape == (1, 8, 8) and torch.isfinite(out).all()


def test_window_index_brute_force():
    from mmdet_odam.explainers.reversed_head import window_index
    shapes = [(3, 4), (2, 2), (1, 3)]
    offs = [0, 12, 16]
    zero = 19
    lvl = torch.tensor([0, 0, 1, 2, 1])
    ctr = torch.tensor([[0, 0], [2, 3], [1, 0], [0, 2], [0, 1]])
    for radius in (0, 1, 2):
        got = window_index(shapes, lvl, ctr, radius)
        assert got.shape == (5, 2 * radius + 1, 2 * radius + 1)
        for n in range(5):
            (h, w), o = shapes[lvl[n]], offs[lvl[n]]
            for i, dy in enumerate(range(-radius, radius + 1)):
                for j, dx in enumerate(range(-radius, radius + 1)):
                    y, x = int(ctr[n, 0]) + dy, int(ctr[n, 1]) + dx
                    ref = o + y * w + x if 0 <= y < h and 0 <= x < w \
                        else zero
                    assert int(got[n, i, j]) == ref, (radius, n, dy, dx)


def test_padded_candidates_do_not_change_maps():
    """What the CUDA-graph replay relies on: candidates are independent,
    so padding the batch with dummy candidates (any valid cell, zero box)
    leaves the real candidates' maps unchanged."""
    from mmdet_odam.explainers import reversed_head as rh
    model = _detector('fcos', True, False)
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    cands = candidates(model, inputs, samples)
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        _, rec = forward_recording(head, feats)
    n = len(cands)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(n, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 50],
                      1).double()
    kw = dict(out_size=(40, 56), pad_shape=inputs.shape[-2:])
    ref = rh.reversed_head_maps(head, feats, rec, cands.with_bboxes(boxes),
                                None, **kw)
    nb = rh.MAPS_GRAPHS.cache.bucket(n)
    assert nb >= max(n, 64) and nb & (nb - 1) == 0
    pad = nb - n
    dummies = Candidates(*(torch.zeros(pad, dtype=torch.long)
                           for _ in range(4)), torch.zeros(pad, 4).double())
    with torch.no_grad():
        padded = rh.reversed_head_maps(
            head, feats, rec,
            Candidates.cat([cands.with_bboxes(boxes), dummies]), None,
            out_size=(40, 56), pad_shape=inputs.shape[-2:])
    assert padded.shape[0] == nb
    assert torch.equal(padded[:n], ref)


def test_grouped_cpu_maps_equal_one_batch(monkeypatch):
    """The CPU path (candidates grouped by their smoothing radius, in
    chunks) gives the maps of one batch with the widest window."""
    from mmdet_odam.explainers import reversed_head as rh
    model = _detector('fcos', True, True)
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    cands = Candidates.cat([candidates(model, inputs, samples)] * 4)
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        _, rec = forward_recording(head, feats)
    n = len(cands)
    monkeypatch.setattr(rh, '_CHUNK', 8)  # several chunks per radius
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(n, 2, generator=g) * 40
    # box sides 2..200 px: kernel radii 0 (identity) to 4 (the widest)
    boxes = torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * 198],
                      1).double()
    kw = dict(out_size=(40, 56), pad_shape=inputs.shape[-2:])
    cands = cands.with_bboxes(boxes)
    calls = []
    core = rh._maps_core

    def spy(*a, **k):
        calls.append(k.get('smooth_radius'))
        return core(*a, **k)

    rh._maps_core = spy
    try:
        got = rh.reversed_head_maps(head, feats, rec, cands, None, **kw)
    finally:
        rh._maps_core = core
    assert len(set(calls)) >= 4 and len(calls) > len(set(calls))
    rh_one = rh._maps_grouped
    rh._maps_grouped = rh._maps_core  # one batch, widest window
    try:
        ref = rh.reversed_head_maps(head, feats, rec, cands, None, **kw)
    finally:
        rh._maps_grouped = rh_one
    assert (ref.flatten(1).abs().max(1).values > 0).sum() > n // 2
    # the float32 Gaussian kernels are normalised over their own taps or
    # over the widest window's (zeros included): a few float32 ulps
    assert rel_err(got, ref) < 1e-6
