"""Exact maps on GroupNorm heads: the own-level autograd path (default
``path='auto'`` and ``path='exact'``) == one backward per candidate through
the whole head, in float64, within 1e-4 of each map's max."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test_explainers'))
from odam_tiny_models import build_detector, fake_batch  # noqa: E402
from test_dense_equivalence import (candidates, reference_maps,  # noqa: E402
                                    rel_err)

from mmdet_odam.core import Candidates  # noqa: E402
from mmdet_odam.explainers import DenseHeadExplainer  # noqa: E402
from mmdet_odam.explainers.base import model_guard  # noqa: E402
from mmdet_odam.explainers.dense import (exact_level_maps,  # noqa: E402
                                         render_padded,
                                         tracked_predict_by_feat)
from mmdet_odam.explainers.targets import BASE_TARGETS  # noqa: E402
from mmdet_odam.paths import (level_groups, scalar_grads,  # noqa: E402
                              tower_costs, tower_supported)

OUT = (48, 64)


@pytest.fixture(params=['towers', 'per_scalar', 'by_cost'])
def force_path(request, monkeypatch):
    """Both own-level paths: the tower path (window + shared GN basis), one
    backward per scalar after the tower hooks ran (the cost estimate said
    no), and whatever the cost estimate picks."""
    import mmdet_odam.explainers.dense as dense
    if request.param == 'towers':
        monkeypatch.setattr(dense, 'tower_costs', lambda layers, n: (0, 1))
    elif request.param == 'per_scalar':
        monkeypatch.setattr(dense, 'tower_costs', lambda layers, n: (1, 0))
    return request.param


def _check_exact(model, inputs, cands, targets, modes=('pos_relu', )):
    pad = tuple(inputs.shape[-2:])
    with model_guard(model) as hooks:
        for t in targets:
            for mode in modes:
                pieces, _ = exact_level_maps(model, inputs, cands, [t],
                                             grad_mode=mode, chunk_size=3)
                got = render_padded(pieces[t], len(cands), pad, OUT)
                ref = reference_maps(model, inputs, cands, t, 'gaussian',
                                     mode, OUT, hooks=hooks)
                nonzero = ref.flatten(1).abs().max(1).values > 0
                # clamped box regressions have zero gradient
                assert nonzero.any()
                assert rel_err(got, ref) < 1e-4, (t, mode)


@pytest.mark.parametrize('kind', ['fcos', 'atss'])
def test_gn_own_level_path_is_exact(kind, force_path):
    model = build_detector(kind, gn=True).double()
    inputs, samples = fake_batch(model, n=2)
    inputs = inputs.double()
    cands = candidates(model, inputs, samples, n=6)
    assert len(set(cands.level_ids.tolist())) == 5  # every level, both images
    _check_exact(model, inputs, cands, list(BASE_TARGETS),
                 modes=('pos_relu', 'pos_norelu'))


def test_gn_default_path_is_the_exact_one():
    """``path='auto'`` on a GN head renders the exact maps: equal to
    ``path='exact'`` and different from the frozen-GN ``path='fast'``."""
    model = build_detector('fcos', gn=True).double()
    inputs, samples = fake_batch(model)
    kw = dict(score_thr=0.0, topk=8)
    maps = {p: DenseHeadExplainer(model, targets=('cls', 'right'), path=p)
            .explain(inputs.double(), samples, **kw)[0]
            for p in ('auto', 'exact', 'fast')}
    for t in ('cls', 'right'):
        peak = maps['auto'].maps[t].flatten(1).max(1).values
        assert (peak > 0).double().mean() > 0.5  # clamped boxes give 0
        assert torch.equal(maps['auto'].maps[t], maps['exact'].maps[t])
        assert (maps['auto'].maps[t] - maps['fast'].maps[t]).abs().max() \
            > 1e-3


def test_level_groups_and_scalar_grads():
    img = torch.tensor([1, 0, 1, 0, 1])
    lvl = torch.tensor([2, 2, 0, 2, 2])
    got = [(i, lv, r.tolist()) for i, lv, r in level_groups(img, lvl)]
    assert got == [(1, 0, [2]), (0, 2, [1, 3]), (1, 2, [0, 4])]
    with pytest.raises(ValueError, match='must be'):
        level_groups(img, lvl[:3])
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    ys = torch.stack([(x ** 2).sum(), x[0, 1, 2, 0] * 3, x.new_zeros(())])
    out = list(scalar_grads(ys, x, chunk=2))
    assert [i.tolist() for i, _ in out] == [[0, 1], [2]]
    g = torch.cat([g for _, g in out])
    want = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    want[0] = 2 * x.detach()[0]
    want[1, 1, 2, 0] = 3
    assert torch.equal(g, want)
    with pytest.raises(ValueError, match='requires'):
        next(scalar_grads(ys, x.detach(), 1))


def test_trained_fcos_own_level_path_is_exact(monkeypatch, tmp_path,
                                              force_path):
    """The shipped trained person FCOS (MobileNetV2, GN head), float64, on
    a downsized demo photograph: its detections and a candidate on every
    level."""
    import mmcv
    from mmdet.structures import DetDataSample

    from mmdet_odam.apis import init_explainer
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # the config's data must not be needed
    model = init_explainer(
        str(root / 'configs/pretrained/fcos_mobilenetv2_crowd-person.py'),
        str(root / 'checkpoints/fcos_mobilenetv2_crowd-person.pth')).double()
    img = mmcv.imresize(mmcv.imread(str(root / 'demo/images/'
                                        '000000005001.jpg')), (160, 96))
    ds = DetDataSample()
    ds.set_metainfo(dict(img_shape=(96, 160), ori_shape=(96, 160),
                         scale_factor=(1.0, 1.0)))
    data = model.data_preprocessor(
        dict(inputs=[torch.from_numpy(img).permute(2, 0, 1).contiguous()],
             data_samples=[ds]), False)
    inputs = data['inputs'].double()
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        det = tracked_predict_by_feat(head, *head(feats),
                                      batch_img_metas=[ds.metainfo])[0][:5]
    lv = det.level_ids.tolist() + list(range(len(feats)))
    loc = det.loc_inds.tolist() + [
        (f.shape[-2] // 2) * f.shape[-1] + f.shape[-1] // 2 for f in feats]
    cands = Candidates.of_image(torch.tensor(lv), torch.tensor(loc),
                                torch.zeros(len(lv), dtype=torch.long))
    _check_exact(model, inputs, cands, [BASE_TARGETS[i] for i in (0, 2, 3)])


def test_tower_costs():
    """Hand counts: 2 GN layers of 4 groups, n rows."""
    model = build_detector('fcos', gn=True)
    layers = list(model.bbox_head.reg_convs)
    # n = 100: top layer: a basis block of 8 maps (BASIS_MAPS_COST = 8);
    # bottom: its 8 maps' conv^T + another block (8)
    assert tower_costs(layers, 100) == (24, 200)
    # n <= 8: the terms go into the rows' own dense parts, n per layer
    assert tower_costs(layers, 3) == (6, 6)
    # n = 9: block (8) on top; bottom: 8 maps + block (8)
    assert tower_costs(layers, 9) == (24, 18)
    plain = list(build_detector('fcos', gn=False).bbox_head.reg_convs)
    assert tower_costs(plain, 50) == (0, 100)
    assert tower_supported(layers) and tower_supported(plain)
    assert not tower_supported([torch.nn.Conv2d(2, 2, 3, padding=1)])


def test_basis_conv_t_is_per_group_conv_t():
    """The grouped conv^T of the GN maps == conv^T of each map built by
    hand (r_g on group g's channels, r_g x^ there, zero elsewhere)."""
    import torch.nn.functional as F

    from mmdet_odam.paths.gn_exact import LayerRecord, _basis_conv_t
    torch.manual_seed(0)
    c, g, h, w = 16, 4, 9, 11
    weight = torch.randn(c, 12, 3, 3, dtype=torch.float64)
    xhat = torch.randn(c, h, w, dtype=torch.float64)
    rstd = torch.rand(g, dtype=torch.float64) + 0.5
    rec = LayerRecord(weight, 1, 1, gn=(torch.ones(c), rstd, xhat))
    ref = []
    for kind in range(2):
        for k in range(g):
            v = torch.zeros(1, c, h, w, dtype=torch.float64)
            sl = slice(k * c // g, (k + 1) * c // g)
            v[0, sl] = rstd[k] * (1 if kind == 0 else xhat[sl])
            ref.append(F.conv_transpose2d(v, weight, padding=1)[0])
    assert torch.allclose(_basis_conv_t(rec, (h, w)), torch.stack(ref),
                          atol=1e-12)


def _tower(norms, c=6, groups=2):
    """conv 3x3 - norm - ReLU layers (float64, eval), input first."""
    from mmcv.cnn import ConvModule
    torch.manual_seed(0)
    layers = []
    for i, kind in enumerate(norms):
        cfg = dict(type='GN', num_groups=groups) if kind == 'gn' else \
            dict(type='BN') if kind == 'bn' else None
        m = ConvModule(c, c, 3, padding=1 + (i == 1), dilation=1 + (i == 1),
                       norm_cfg=cfg)
        if kind == 'bn':
            m.bn.running_mean.normal_()
            m.bn.running_var.uniform_(0.5, 2)
        for prm in m.parameters():
            prm.data.normal_(0, 0.5)
        layers.append(m.double().eval())
    return layers


@pytest.mark.parametrize('chunked', [False, True])
@pytest.mark.parametrize('n', [3, 9, 30])
def test_tower_backward_equals_autograd(n, chunked, monkeypatch):
    """Window + dense basis == autograd of each row's window gradient
    through the tower, in float64: n = 3 (GroupNorm terms go into the
    rows' own dense parts), 9 (basis blocks, then the rows' own parts), 30
    (basis blocks on every layer); dilated and BatchNorm layers included;
    full-map conv^T in one batch or one map at a time."""
    import mmdet_odam.paths.gn_exact as gn_exact
    from mmdet_odam.paths.gn_exact import (add_windows, record_tower,
                                           tower_backward)
    if chunked:
        monkeypatch.setattr(gn_exact, 'CONV_T_CHUNK_ELEMS', 1)
    layers = _tower(['gn', 'gn', 'bn', 'gn'])
    h, w = 7, 9
    x = torch.randn(1, 6, h, w, dtype=torch.float64, requires_grad=True)
    cells = torch.randint(0, h * w, (n, ))
    win = torch.randn(n, 6, 3, 3, dtype=torch.float64)
    recs, _ = record_tower(layers, x.detach())
    got_win, basis = tower_backward(recs, win, cells, (h, w))
    got = add_windows(basis.combine(), got_win, cells)
    out = x
    for m in layers:
        out = m(out)
    for i in range(n):
        cot = torch.zeros_like(out)
        add_windows(cot, win[i:i + 1], cells[i:i + 1])
        ref, = torch.autograd.grad(out, x, cot, retain_graph=True)
        assert torch.allclose(got[i], ref[0], atol=1e-10), i


@pytest.mark.parametrize('kind', ['fcos', 'atss'])
def test_one_image_explain_equals_generic_oracle(kind, force_path):
    """One image: the prediction's level forwards also serve the exact maps
    (no second head forward); the maps equal the generic autograd path's
    (float64, 1e-4 of each map's max), the detections are the same."""
    from mmdet_odam.explainers import build_explainer
    model = build_detector(kind, gn=True).double()
    inputs, samples = fake_batch(model, n=1)
    inputs = inputs.double()
    kw = dict(score_thr=0.0, topk=12)
    got = DenseHeadExplainer(model, targets=BASE_TARGETS,
                             path='exact').explain(inputs, samples, **kw)[0]
    ref = build_explainer(model, method='odam_generic',
                          targets=BASE_TARGETS).explain(inputs, samples,
                                                        **kw)[0]
    assert len(got) == 12
    assert torch.equal(got.labels, ref.labels)
    assert torch.allclose(got.bboxes, ref.bboxes)
    for t in BASE_TARGETS:
        a, b = got.maps[t].double(), ref.maps[t].double()
        scale = b.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        assert ((a - b).abs() / scale).amax() < 1e-4, t


def test_level_tower_grads_blocks_and_chunks(monkeypatch):
    """The rows' gradients do not depend on how many rows share one product
    with the basis or one yielded chunk; each equals autograd (float64)."""
    import mmdet_odam.paths.gn_exact as gn_exact
    from mmdet_odam.paths.gn_exact import add_windows
    layers = _tower(['gn', 'gn'])
    pred = torch.nn.Conv2d(6, 3, 3, padding=1).double()
    x = torch.randn(1, 6, 7, 9, dtype=torch.float64, requires_grad=True)
    n = 11
    cells = torch.randint(0, 63, (n, ))
    coefs = {t: [[torch.randn(n, 3, dtype=torch.float64)]]  # tower, pred
             for t in 'ab'}

    def run(rows, chunk):
        monkeypatch.setattr(gn_exact, 'COMBINE_ROWS', rows)
        out = {}
        for t, idx, g in gn_exact.level_tower_grads(
                [(layers, [pred])], x.detach(), cells, coefs, chunk):
            assert len(idx) <= chunk
            out.setdefault(t, []).append(g)
        return {t: torch.cat(v) for t, v in out.items()}

    ref = run(64, 16)
    got = run(2, 1)  # blocks of 2 rows, chunks of 1
    out = pred(layers[1](layers[0](x)))
    for t in coefs:
        assert torch.allclose(got[t], ref[t], atol=1e-12)
        for i in range(n):
            cot = torch.zeros_like(out)
            add_windows(cot, coefs[t][0][0][i:i + 1, :, None, None],
                        cells[i:i + 1])
            want, = torch.autograd.grad(out, x, cot, retain_graph=True)
            assert torch.allclose(ref[t][i], want[0], atol=1e-10), (t, i)
