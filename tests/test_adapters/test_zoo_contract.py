"""Contract of the explainers over MMDetection's own zoo (timm style).

Every family of :data:`mmdet_odam.testing.ZOO` is built from the config
shipped inside the installed mmdet (shrunk, random weights) and explained
with the default call on one COCO photograph. For each family:

* the explained detections are ``model.predict``'s (same batch, rescaled);
* every target gives (K, H, W) maps at the original size, finite, in
  [0, 1], different between detections;
* the model is untouched afterwards (training flags, ``requires_grad``,
  weights, hooks, mmdet functions patched for the call);
* a path other than the generic one equals the generic autograd oracle to
  1e-4 of each map's maximum, in float64; on the generic path, its
  two-stage gradients (through a dense head's per-level outputs) equal the
  plain one-stage backward the same way;
* ``explain_support`` reports one row per target with its path.
"""
import copy
import sys

import pytest
import torch

from mmdet_odam.testing import ZOO, build_zoo_model, float64_nms, zoo_inputs

TARGETS = ['cls', 'left', 'top', 'right', 'bottom', 'combined']
BASE = ['cls', 'left', 'top', 'right', 'bottom']
K = 3
#: Fast path vs the generic oracle, in units of each map's maximum.
ORACLE_TOL = 1e-4
#: The same in float32, for families without float64 kernels.
ORACLE_TOL_FLOAT32 = 1e-2
_MODELS = {}


def zoo_model(name):
    """The family's model, built once per test session."""
    if name not in _MODELS:
        _MODELS[name] = build_zoo_model(name)
    return _MODELS[name]


def module_state(model):
    """Everything an explainer may change on the model for one call."""
    hook_dicts = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks',
                  '_backward_pre_hooks', '_state_dict_hooks',
                  '_load_state_dict_pre_hooks')
    mods = {n: (m.training, tuple(len(getattr(m, d, {})) for d in hook_dicts))
            for n, m in model.named_modules()}
    params = {n: (p.requires_grad, p.dtype, p.detach().clone())
              for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    patched = {(k, a): getattr(v, a) for k, v in list(sys.modules.items())
               if k.startswith('mmdet') and v is not None
               for a in ('select_single_mlvl', ) if hasattr(v, a)}
    g = torch.nn.modules.module
    globals_ = (len(g._global_forward_hooks),
                len(g._global_forward_pre_hooks),
                len(g._global_backward_hooks))
    return mods, params, buffers, patched, globals_


def assert_same_state(before, after):
    mods0, params0, buf0, patched0, glob0 = before
    mods1, params1, buf1, patched1, glob1 = after
    assert mods0 == mods1, 'training flags or hooks changed'
    for n, (rg, dt, v) in params0.items():
        assert params1[n][:2] == (rg, dt), f'{n}: requires_grad / dtype'
        assert torch.equal(params1[n][2], v), f'{n}: weights changed'
    for n, v in buf0.items():
        assert torch.equal(buf1[n], v), f'buffer {n} changed'
    assert patched0 == patched1, 'an mmdet function stayed patched'
    assert glob0 == glob1, 'a global module hook was left'


def reference(model, inputs, samples):
    """``model.predict``'s detections, highest score first (mmdet's order
    is not always by score, e.g. PAA's score voting)."""
    with torch.no_grad():
        res = model.predict(inputs, copy.deepcopy(samples), rescale=True)
    inst = res[0].pred_instances
    order = torch.sort(inst.scores, descending=True, stable=True).indices
    return inst[order]


def assert_same_detections(exp, ref):
    k = len(exp)
    assert k == min(K, len(ref.scores)) and k > 0, \
        f'{k} explained rows, predict reports {len(ref.scores)}'
    torch.testing.assert_close(exp.bboxes.float(), ref.bboxes[:k].float(),
                               atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(exp.scores.float(), ref.scores[:k].float(),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(exp.labels.long().cpu(), ref.labels[:k].long())


def clipped(box, ori_shape, coord):
    """The detection's ``coord`` lies on the image border (mmdet clips it
    there, so it has no gradient)."""
    h, w = ori_shape
    i = BASE.index(coord) - 1
    edge = (0.0, 0.0, float(w), float(h))[i]
    return abs(float(box[i]) - edge) < 1e-4


def assert_valid_maps(exp, ori_shape):
    h, w = ori_shape
    for t in TARGETS:
        m = exp.maps[t]
        assert m.shape == (len(exp), h, w), f'{t}: {tuple(m.shape)}'
        assert torch.isfinite(m).all(), f'{t}: not finite'
        assert m.min() >= 0 and m.max() <= 1, f'{t}: outside [0, 1]'
    h_, w_ = float(h), float(w)
    inside = ((exp.bboxes[:, 0] < w_) & (exp.bboxes[:, 2] > 0)
              & (exp.bboxes[:, 1] < h_) & (exp.bboxes[:, 3] > 0))
    empty = exp.maps['combined'].flatten(1).amax(1) == 0
    assert not (empty & inside).any(), \
        f'detections {(empty & inside).nonzero().flatten().tolist()} ' \
        'inside the image have empty maps for every target'
    for t in BASE:
        m = exp.maps[t]
        live = m.flatten(1).amax(1) > 0
        for i in range(len(exp)):
            if t != 'cls' and clipped(exp.bboxes[i], ori_shape, t):
                assert not live[i], f'{t}: clipped coordinate, non-zero map'
            for j in range(i + 1, len(exp)):
                same_box = torch.equal(exp.bboxes[i], exp.bboxes[j])
                if t != 'cls' and same_box:  # one candidate, two labels
                    continue
                if live[i] and live[j]:
                    assert not torch.allclose(m[i], m[j], atol=1e-6), \
                        f'{t}: rows {i} and {j} have the same map'


def explained_path(model):
    """``'generic'`` when the default call takes the generic path."""
    from mmdet_odam.apis import explain_support
    rows = explain_support(model, targets=TARGETS).rows
    adapters = {str(r['adapter']) for r in rows}
    return 'generic' if adapters == {'generic'} else 'fast'


def assert_close_maps(a_exp, b_exp, tol, what):
    assert torch.equal(a_exp.labels, b_exp.labels)
    for t in TARGETS:
        a, b = a_exp.maps[t].double(), b_exp.maps[t].double()
        scale = b.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        err = ((a - b).abs() / scale).amax()
        assert err <= tol, f'{t}: {what} ({err:.2e})'


def as_float64(model, inputs):
    """(model, inputs, tolerance) in float64 where the family allows."""
    if ZOO[model_name(model)].float64:
        return copy.deepcopy(model).double(), inputs.double(), ORACLE_TOL
    return model, inputs, ORACLE_TOL_FLOAT32


def assert_staged_equals_plain(model, inputs, samples):
    """Same model, same dtype: the two differ by summation order only."""
    from mmdet_odam.explainers import build_explainer
    exps = []
    for staged in (True, False):
        ex = build_explainer(model, method='odam_generic', targets=TARGETS)
        ex.staged_grads = staged
        exps.append(ex.explain(inputs, samples, score_thr=0.0, topk=K)[0])
    assert_close_maps(*exps, ORACLE_TOL, 'two-stage != one-stage gradients')


def assert_equals_oracle(model, inputs, samples):
    from mmdet_odam.explainers import build_explainer
    model, inputs, tol = as_float64(model, inputs)
    kw = dict(score_thr=0.0, topk=K)
    # detections were checked against predict in float32 (some mmdet heads,
    # e.g. mask pasting, do not run in float64)
    with float64_nms():
        fast = build_explainer(model, targets=TARGETS,
                               verify='never').explain(inputs, samples,
                                                       **kw)[0]
        oracle = build_explainer(model, method='odam_generic',
                                 targets=TARGETS)
        oracle.staged_grads = False  # the plain one-stage backward
        gen = oracle.explain(inputs, samples, **kw)[0]
    assert_close_maps(fast, gen, tol, 'fast != generic oracle')


def model_name(model):
    return next(n for n, m in _MODELS.items() if m is model)


@pytest.mark.parametrize('name', list(ZOO))
def test_zoo_contract(name):
    from mmdet_odam.explainers import build_explainer
    model = zoo_model(name)
    inputs, samples = zoo_inputs(model)
    ref = reference(model, inputs, samples)
    before = module_state(model)
    exp = build_explainer(model, targets=TARGETS).explain(
        inputs, samples, score_thr=0.0, topk=K)[0]
    assert_same_state(before, module_state(model))
    assert_same_detections(exp, ref)
    assert_valid_maps(exp, samples[0].ori_shape)
    if explained_path(model) != 'generic':
        assert_equals_oracle(model, inputs, samples)
    else:
        assert_staged_equals_plain(model, inputs, samples)


@pytest.mark.parametrize('name', list(ZOO))
def test_zoo_explain_support(name):
    from mmdet_odam.apis import explain_support
    model = zoo_model(name)
    before = module_state(model)
    report = explain_support(model, targets=TARGETS)
    assert_same_state(before, module_state(model))
    assert [r['target'] for r in report.rows] == TARGETS or \
        [str(r['target']) for r in report.rows] == TARGETS
    for row in report.rows:
        assert {'target', 'adapter', 'path', 'exact', 'reasons'} <= set(row)
        assert isinstance(row['exact'], bool)
        assert all(isinstance(r, str) for r in row['reasons'])
    text = str(report)
    assert all(str(r['adapter']) in text for r in report.rows)


#: Dense families on the generic path whose first stage cannot be split by
#: detection, and why (the split proves disjointness and declines).
SPLIT_DECLINED = {'PAA': 'sqrt of exact zeros: NaN for a zero upstream'}
DENSE_GENERIC = [n for n in ZOO if n not in (
    'Faster R-CNN', 'Mask R-CNN', 'Cascade R-CNN',
    'Libra R-CNN', 'Sparse R-CNN', 'QueryInst', 'DETR', 'Conditional DETR',
    'DAB-DETR', 'Deformable DETR', 'DINO')]


@pytest.mark.parametrize('name', DENSE_GENERIC)
def test_generic_first_stage_is_split_by_detection(name, monkeypatch):
    """The generic path's first stage (post-processing backward) is one
    backward per target split by detection wherever the probes prove the
    detections' head outputs disjoint; equality with the plain backward is
    :func:`assert_staged_equals_plain` in the contract test."""
    import mmdet_odam.explainers.generic as generic
    from mmdet_odam.explainers import build_explainer
    taken = []

    def spy(*args, **kwargs):
        split = split_by_owner(*args, **kwargs)
        taken.append(split is not None)
        return split

    split_by_owner = generic.split_by_owner
    monkeypatch.setattr(generic, 'split_by_owner', spy)
    model = zoo_model(name)
    inputs, samples = zoo_inputs(model)
    build_explainer(model, method='odam_generic', targets=BASE).explain(
        inputs, samples, score_thr=0.0, topk=K)
    assert taken == [name not in SPLIT_DECLINED], SPLIT_DECLINED.get(name)


#: Dense families whose head levels are proved local (no GroupNorm,
#: deformable convolution or global op in their towers): the generic path's
#: second stage runs on crops around the detections.
CROPPED = ('RetinaNet', 'FSAF', 'FoveaBox', 'CenterNet', 'YOLOv3', 'YOLOX',
           'RTMDet', 'RTMDet-Ins', 'SSDLite')
#: ... except where a window covers more than half of the detections' level
WHOLE_LEVEL = {'RTMDet-Ins': "the tiny model's top detections lie on its "
                             '4x5 level'}


@pytest.mark.parametrize('name', DENSE_GENERIC)
def test_generic_second_stage_on_crops_where_local(name, monkeypatch):
    """Levels proved local exactly on the families with local towers, and
    their crops taken; equality with the one-stage backward is
    :func:`assert_staged_equals_plain` in the contract test."""
    import mmdet_odam.explainers.second_stages as stages
    from mmdet_odam.core.local_grads import CroppedLevel
    from mmdet_odam.explainers import build_explainer
    built, taken = [], []
    vjp_at, levels = CroppedLevel.vjp_at, stages.cropped_levels

    def spy_levels(*args):
        found = levels(*args)
        built.append(bool(found))
        return found

    def spy_vjp(self, place, ups):
        out = vjp_at(self, place, ups)
        assert self.declined is None, self.declined  # same forward
        taken.append(out is not None)
        return out

    monkeypatch.setattr(stages, 'cropped_levels', spy_levels)
    monkeypatch.setattr(CroppedLevel, 'vjp_at', spy_vjp)
    model = zoo_model(name)
    inputs, samples = zoo_inputs(model)
    ex = build_explainer(model, method='odam_generic', targets=BASE)
    ex.explain(inputs, samples, score_thr=0.0, topk=K)
    assert built == [name in CROPPED]
    assert any(taken) == (name in CROPPED and name not in WHOLE_LEVEL), \
        WHOLE_LEVEL.get(name, taken)
    assert ex.second_stage == ('crops' if any(taken) else 'autograd')
    # what explain_support says beforehand, from the modules alone
    assert ('on crops' in ex.second_stage_plan()) == (name in CROPPED)


#: Two-stage families whose box RoI extractors take RoIAlign's adjoint on
#: the generic path (one stage per extractor call; three in Cascade R-CNN)
ROI_ADJOINT = ('Faster R-CNN', 'Mask R-CNN', 'Cascade R-CNN', 'Libra R-CNN')
#: ... and where the first-stage split declines, so the plain backward runs
ROI_SPLIT_DECLINED = {
    'Sparse R-CNN': 'the queries attend to each other between stages',
    'QueryInst': 'the queries attend to each other between stages'}


@pytest.mark.parametrize('name', ROI_ADJOINT + tuple(ROI_SPLIT_DECLINED))
def test_generic_second_stage_by_roi_align_adjoint(name, monkeypatch):
    """Taken on the two-stage families whose detections own their RoIs;
    equality with the plain backward: :func:`assert_staged_equals_plain`
    in the contract test (Cascade R-CNN, Sparse R-CNN, QueryInst) and
    here for the others."""
    from mmdet_odam.explainers import build_explainer
    from mmdet_odam.explainers.roi_stages import RoiStage
    taken = []
    owned_vjp = RoiStage.owned_vjp

    def spy(self, *args):
        out = owned_vjp(self, *args)
        assert self.declined is None, self.declined  # same features
        taken.append(bool(out))
        return out

    monkeypatch.setattr(RoiStage, 'owned_vjp', spy)
    model = zoo_model(name)
    inputs, samples = zoo_inputs(model)
    ex = build_explainer(model, method='odam_generic', targets=BASE)
    ex.explain(inputs, samples, score_thr=0.0, topk=K)
    assert any(taken) == (name in ROI_ADJOINT), \
        ROI_SPLIT_DECLINED.get(name, taken)
    assert ex.second_stage == ('roi_adjoint' if any(taken) else 'autograd')
    assert ("RoIAlign's adjoint" in ex.second_stage_plan()) == (
        name in ROI_ADJOINT)
    if explained_path(model) != 'generic':
        assert_staged_equals_plain(model, inputs, samples)


@pytest.mark.parametrize('name, stage', [
    ('YOLOX', 'crops'), ('CenterNet', 'crops'),
    ('Cascade R-CNN', 'roi_adjoint')])
def test_second_stages_on_a_batch_equal_single_images(name, stage):
    """Windows carry their image: a batch of two different images gives
    each image's maps alone."""
    from mmdet_odam.explainers import build_explainer
    from mmdet_odam.testing.zoo import coco_image, synthetic_image
    model = zoo_model(name)
    a, sa = zoo_inputs(model, coco_image())
    b, sb = zoo_inputs(model, synthetic_image())
    ex = build_explainer(model, method='odam_generic', targets=TARGETS)
    both = ex.explain(torch.cat([a, b]), sa + sb, score_thr=0.0, topk=K)
    assert ex.second_stage == stage
    for exp, (x, s) in zip(both, ((a, sa), (b, sb))):
        alone = ex.explain(x, s, score_thr=0.0, topk=K)[0]
        assert_close_maps(exp, alone, ORACLE_TOL, 'batch != single image')


@pytest.mark.parametrize('name', ['Cascade R-CNN', 'Sparse R-CNN'])
def test_detached_roi_align_boxes_change_no_gradient(name, monkeypatch):
    """The generic path detaches the boxes going into mmcv's RoIAlign (it
    has no gradient w.r.t. them): the maps of a cascade and of a
    query-based detector whose stages' boxes keep their gradient are the
    same without."""
    import mmdet_odam.explainers.second_stages as stages
    from mmdet_odam.explainers import build_explainer
    model = zoo_model(name)
    inputs, samples = zoo_inputs(model)
    exps = []
    for detach in (True, False):
        if not detach:
            monkeypatch.setattr(stages, 'boxes_without_grad',
                                lambda layer, args: None)
        exps.append(build_explainer(model, targets=TARGETS).explain(
            inputs, samples, score_thr=0.0, topk=K)[0])
    assert_close_maps(*exps, ORACLE_TOL, 'detached RoIAlign boxes')


@pytest.mark.parametrize('name', ['DINO', 'Deformable DETR'])
def test_zoo_models_are_reproducible(name):
    """Parameters mmdet's constructors leave uninitialised (``level_embed``)
    are drawn: two builds with one seed are equal and finite."""
    from mmdet_odam.testing import build_zoo_model
    a = dict(build_zoo_model(name).named_parameters())
    b = dict(build_zoo_model(name).named_parameters())
    assert a.keys() == b.keys()
    for n, p in a.items():
        assert torch.isfinite(p).all(), f'{n}: not finite'
        assert torch.equal(p, b[n]), f'{n}: differs between two builds'
