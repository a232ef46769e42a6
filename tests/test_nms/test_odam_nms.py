"""Odam-NMS: classic-NMS invariant, two rules, edge cases, config errors."""
import math

import pytest
import torch
from mmcv.ops import batched_nms, nms

from mmdet.registry import MODELS
from mmdet_odam.nms import (CorrType, OdamNMS, batched_odam_nms,
                            check_odam_nms_cfg, map_correlation,
                            nms_map_size, normalize_maps, odam_nms,
                            pairwise_iou)

CLASSIC = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.0,
               corr_high=1.0)


def _random_case(seed, n_max=150, n_cls=3, d=24):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, n_max, (1, ), generator=g))
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    # integer-ish coordinates make IoU ties and exact threshold hits likely
    if seed % 2:
        boxes = boxes.round()
    scores = (torch.rand(n, generator=g) * 8).round() / 8  # many ties
    labels = torch.randint(0, n_cls, (n, ), generator=g)
    maps = torch.rand(n, d, generator=g)
    if seed % 3 == 0:
        maps[::4] = 0  # vanished maps
    return boxes, scores, labels, maps


@pytest.mark.parametrize('corr_type', ['pearson', 'cosine'])
@pytest.mark.parametrize('iou_thr', [0.3, 0.5, 0.7])
def test_classic_invariant_random(corr_type, iou_thr):
    for seed in range(60):
        boxes, scores, labels, maps = _random_case(seed)
        keep_ref = nms(boxes, scores, iou_thr)[1]
        keep = odam_nms(boxes, scores, maps, iou_thr, 0.0, 1.0, corr_type)
        assert torch.equal(keep, keep_ref), seed
        cfg = dict(CLASSIC, iou_threshold=iou_thr, corr_type=corr_type)
        dets_ref, keep_ref = batched_nms(
            boxes, scores, labels, dict(type='nms', iou_threshold=iou_thr))
        dets, keep = batched_odam_nms(boxes, scores, labels, maps, cfg)
        assert torch.equal(keep, keep_ref), seed
        assert torch.equal(dets, dets_ref), seed


def test_classic_invariant_iou_exactly_at_threshold():
    # IoU(a, b) = 50 / 100 = 0.5 exactly, IoU(a, c) = 1/3: mmcv keeps b
    # (iou > thr is strict) and so must Odam-NMS with corr_low=0.
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.],
                          [5., 0., 15., 10.]])
    assert pairwise_iou(boxes)[0, 1].item() == 0.5
    scores = torch.tensor([0.9, 0.8, 0.7])
    maps = torch.ones(3, 10)  # constant maps: pearson corr 0
    ref = nms(boxes, scores, 0.5)[1]
    assert ref.tolist() == [0, 1, 2]
    for ct in CorrType:
        assert odam_nms(boxes, scores, maps, 0.5, 0.0, 1.0, ct).tolist() \
            == ref.tolist()


def test_classic_invariant_large_candidate_set():
    g = torch.Generator().manual_seed(1)
    n = 1000
    xy = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 5], 1)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 2, (n, ), generator=g)
    maps = torch.rand(n, 50 * 60, generator=g)
    dets_ref, keep_ref = batched_nms(boxes, scores, labels,
                                     dict(type='nms', iou_threshold=0.5))
    dets, keep = batched_odam_nms(boxes, scores, labels, maps, CLASSIC)
    assert torch.equal(keep, keep_ref)


@pytest.mark.parametrize('thr', [(0.0, 1.0), (0.2, 0.8), (0.5, 0.5),
                                 (0.0, 0.3), (0.9, 1.0)])
def test_dense_and_block_greedy_agree(thr):
    """The GPU way (whole duplicate matrix, one host copy) keeps exactly
    what the blockwise loop keeps, from maps and from precomputed corr,
    across blocks (K > 128) and classes (the blockwise loop is the one
    checked against mmcv above)."""
    from mmdet_odam.nms.odam_nms import _greedy_sorted, _Rule
    rule = _Rule(0.5, *thr)
    for seed in range(12):
        boxes, scores, labels, maps = _random_case(seed, n_max=400)
        order = scores.sort(0, descending=True)[1]
        b, groups = boxes[order], labels[order]
        z = normalize_maps(maps[order])
        corr = map_correlation(maps[order])
        block = _greedy_sorted(b, z, groups, rule, dense=False)
        dense = _greedy_sorted(b, z, groups, rule, dense=True)
        assert (block == dense).all(), seed
        assert (_greedy_sorted(b, None, groups, rule, corr=corr,
                               dense=True) == block).all(), seed


def test_padded_dup_matrix_ignores_padding():
    """What the GPU graph of the duplicate matrix relies on: the first k
    sorted candidates padded with junk give the unpadded matrix, and the
    padding never suppresses nor is suppressed."""
    from mmdet_odam.nms.odam_nms import (_dup_matrix, _padded_dup_matrix,
                                         _Rule)
    rule = _Rule(0.5, 0.2, 0.8)
    for seed in range(6):
        boxes, scores, labels, maps = _random_case(seed, n_max=100)
        order = scores.sort(0, descending=True)[1]
        b, groups, z = boxes[order], labels[order], maps[order]
        k, nb = len(b), 128
        junk = _random_case(seed + 100, n_max=300)
        pad = lambda x, j: torch.cat([x, j[:nb - k]])  # noqa: E731
        jb, jl, jm = junk[0], junk[2], junk[3]
        while len(jb) < nb:
            jb, jl, jm = torch.cat([jb, jb]), torch.cat([jl, jl]), \
                torch.cat([jm, jm])
        for ct in CorrType:
            d, finite = _padded_dup_matrix(torch.tensor(k), pad(b, jb),
                                           pad(z, jm), pad(groups, jl),
                                           rule, ct)
            ref = _dup_matrix(b, normalize_maps(z, ct), groups, rule)
            assert bool(finite) and d.shape == (nb, nb)
            assert torch.equal(d[:k, :k], ref), (seed, ct)
            assert not d[k:].any() and not d[:, k:].any()
        bad = z.clone()
        bad[0, 0] = float('nan')
        assert not bool(_padded_dup_matrix(torch.tensor(k), pad(b, jb),
                                           pad(bad, jm), pad(groups, jl),
                                           rule, CorrType.PEARSON)[1])


def _two_people_maps():
    """Two distinct one-blob maps (corr ~ 0) on a 10x10 grid."""
    a = torch.zeros(10, 10)
    a[2:4, 2:4] = 1
    b = torch.zeros(10, 10)
    b[6:8, 6:8] = 1
    return a, b


def test_rule1_high_iou_low_corr_is_kept():
    boxes = torch.tensor([[0., 0., 10., 20.], [1., 0., 11., 20.]])
    assert pairwise_iou(boxes)[0, 1] > 0.8
    scores = torch.tensor([0.9, 0.8])
    a, b = _two_people_maps()
    maps = torch.stack([a, b])
    assert map_correlation(maps)[0, 1] < 0.2
    assert odam_nms(boxes, scores, maps).tolist() == [0, 1]
    # classic NMS removes it
    assert nms(boxes, scores, 0.5)[1].tolist() == [0]
    # same maps -> duplicate
    same = torch.stack([a, a + 0.01 * torch.rand(10, 10)])
    assert odam_nms(boxes, scores, same).tolist() == [0]


def test_rule2_low_iou_high_corr_is_removed():
    boxes = torch.tensor([[0., 0., 10., 20.], [6., 0., 16., 20.]])
    iou = pairwise_iou(boxes)[0, 1].item()
    assert 0 < iou < 0.5
    scores = torch.tensor([0.9, 0.8])
    a, b = _two_people_maps()
    maps = torch.stack([a, a * 0.5 + 0.01 * b])  # highly correlated
    assert map_correlation(maps)[0, 1] > 0.8
    assert odam_nms(boxes, scores, maps).tolist() == [0]
    # even with IoU = 0
    far = torch.tensor([[0., 0., 10., 20.], [50., 0., 60., 20.]])
    assert odam_nms(far, scores, maps).tolist() == [0]
    # distinct maps at low IoU: kept; corr_high=1 switches rule 2 off
    assert odam_nms(boxes, scores, torch.stack([a, b])).tolist() == [0, 1]
    assert odam_nms(boxes, scores, maps, corr_high=1.0).tolist() == [0, 1]


def test_only_kept_detections_suppress():
    # 0 kept; 1 duplicate of 0 (removed); 2 correlates with 1 only at low
    # IoU -> must be kept since 1 is not in D (Algorithm 1 compares with D).
    a, b = _two_people_maps()
    boxes = torch.tensor([[0., 0., 10., 20.], [0.5, 0., 10.5, 20.],
                          [30., 0., 40., 20.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    maps = torch.stack([a, a, b])
    maps2 = maps.clone()
    maps2[1] = a + b  # correlates with both a and b (~0.5)
    assert odam_nms(boxes, scores, maps2, corr_high=0.4).tolist() == [0, 2]


def test_thresholds_boundaries():
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
    scores = torch.tensor([0.9, 0.8])
    maps = torch.tensor([[1., 0., 0., 0.], [1., 0., 1., 0.]])
    c = map_correlation(maps, corr_type='cosine')[0, 1].item()
    assert math.isclose(c, 1 / math.sqrt(2), rel_tol=1e-6)
    # rule 1 is inclusive on corr_low ...
    cl = float(torch.tensor(c))
    assert odam_nms(boxes, scores, maps, 0.5, cl, 1.0, 'cosine').tolist() \
        == [0]
    # ... and rule 2 strict on corr_high
    far = torch.tensor([[0., 0., 10., 10.], [20., 0., 30., 10.]])
    assert odam_nms(far, scores, maps, 0.5, 0.0, cl, 'cosine').tolist() \
        == [0, 1]
    assert odam_nms(far, scores, maps, 0.5, 0.0, cl - 1e-4,
                    'cosine').tolist() == [0]


def test_pearson_vs_cosine():
    # two positive maps with different peaks: cosine high, pearson low
    x = torch.linspace(0, 1, 50)
    a = 1.0 + torch.exp(-((x - 0.2) / 0.05)**2)
    b = 1.0 + torch.exp(-((x - 0.8) / 0.05)**2)
    maps = torch.stack([a, b])
    cos = map_correlation(maps, corr_type='cosine')[0, 1]
    pear = map_correlation(maps, corr_type='pearson')[0, 1]
    assert cos > 0.85 and pear == 0  # negative pearson clamped to 0
    ref = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert torch.allclose(cos, ref, atol=1e-6)
    c = torch.stack([a, a * 3 + 0.5])  # affine copy: pearson 1
    assert torch.allclose(map_correlation(c)[0, 1], torch.tensor(1.0))
    boxes = torch.tensor([[0., 0., 10., 10.], [30., 0., 40., 10.]])
    scores = torch.tensor([0.9, 0.8])
    assert odam_nms(boxes, scores, maps, corr_type='cosine').tolist() == [0]
    assert odam_nms(boxes, scores, maps, corr_type='pearson').tolist() == \
        [0, 1]


def test_per_class_independence():
    boxes = torch.tensor([[0., 0., 10., 20.], [0., 0., 10., 20.],
                          [50., 0., 60., 20.], [0., 0., 10., 20.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    a, _ = _two_people_maps()
    maps = a.expand(4, 10, 10)
    labels = torch.tensor([0, 1, 1, 0])
    dets, keep = batched_odam_nms(boxes, scores, labels, maps,
                                  dict(type='odam_nms'))
    # class 1: box 2 (IoU 0, same map) removed by rule 2 of box 1;
    # class 0: box 3 duplicate of box 0; no suppression across classes
    assert keep.tolist() == [0, 1]
    assert torch.equal(dets[:, :4], boxes[keep])
    assert torch.equal(dets[:, 4], scores[keep])
    # per-class result == running each class alone
    for c in (0, 1):
        m = labels == c
        k = odam_nms(boxes[m], scores[m], maps[m])
        assert sorted(torch.nonzero(m)[:, 0][k].tolist()) == \
            sorted(i for i in keep.tolist() if labels[i] == c)
    _, keep_ag = batched_odam_nms(boxes, scores, labels, maps,
                                  dict(type='odam_nms', class_agnostic=True))
    assert keep_ag.tolist() == [0]
    _, keep_max = batched_odam_nms(boxes, scores, labels, maps,
                                   dict(type='odam_nms', max_num=1))
    assert keep_max.tolist() == [0]


def test_zero_one_identical_candidates():
    empty = torch.zeros(0, 4)
    assert odam_nms(empty, torch.zeros(0), torch.zeros(0, 5)).shape == (0, )
    dets, keep = batched_odam_nms(empty, torch.zeros(0),
                                  torch.zeros(0, dtype=torch.long),
                                  torch.zeros(0, 5), dict(type='odam_nms'))
    assert dets.shape == (0, 5) and keep.shape == (0, ) and \
        keep.dtype == torch.long
    one = torch.tensor([[1., 2., 3., 4.]])
    assert odam_nms(one, torch.tensor([0.3]), torch.zeros(1, 5)).tolist() \
        == [0]
    boxes = torch.tensor([[1., 2., 30., 40.]]).repeat(5, 1)
    scores = torch.full((5, ), 0.5)
    maps = torch.rand(1, 16).repeat(5, 1)
    keep = odam_nms(boxes, scores, maps)
    assert keep.tolist() == nms(boxes, scores, 0.5)[1].tolist()
    assert len(keep) == 1


def test_all_zero_maps_no_nan():
    maps = torch.zeros(4, 7, 9)
    maps[1] = 3.0  # constant map: zero variance
    z = normalize_maps(maps)
    assert torch.isfinite(z).all() and (z == 0).all()
    c = map_correlation(maps, corr_type='cosine')
    assert torch.isfinite(c).all()
    assert c[0].eq(0).all() and abs(c[1, 1].item() - 1) < 1e-6
    boxes = torch.tensor([[0., 0., 10., 10.]]).repeat(4, 1)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # corr 0 < corr_low: high-IoU boxes with vanished maps are not duplicates
    assert odam_nms(boxes, scores, maps).tolist() == [0, 1, 2, 3]
    # tiny but non-zero maps still correlate (scale-free)
    tiny = torch.rand(2, 30) * 1e-30
    assert torch.allclose(map_correlation(tiny)[0, 0], torch.tensor(1.))
    with pytest.raises(ValueError, match='NaN'):
        odam_nms(boxes, scores, torch.full((4, 3), float('nan')))


def test_input_shape_errors():
    with pytest.raises(ValueError, match='maps'):
        odam_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match='boxes'):
        odam_nms(torch.zeros(2, 5), torch.zeros(2), torch.zeros(2, 5))


@pytest.mark.parametrize('cfg,key', [
    (dict(iou_threshold=1.5), 'iou_threshold'),
    (dict(corr_low=-0.1), 'corr_low'),
    (dict(corr_high=2), 'corr_high'),
    (dict(corr_low=0.9, corr_high=0.1), 'corr_low'),
    (dict(corr_type='spearman'), 'corr_type'),
    (dict(corr_lo=0.1), 'corr_lo'),
    (dict(type='nms'), 'type'),
    (dict(iou_threshold='0.5'), 'iou_threshold'),
    (dict(max_num=1.5), 'max_num'),
])
def test_config_errors(cfg, key):
    with pytest.raises(ValueError, match=key):
        check_odam_nms_cfg(dict(dict(type='odam_nms'), **cfg))
    with pytest.raises(ValueError, match=key):
        batched_odam_nms(torch.zeros(1, 4), torch.ones(1),
                         torch.zeros(1, dtype=torch.long), torch.ones(1, 3),
                         dict(dict(type='odam_nms'), **cfg))


def test_registered_post_processor():
    post = MODELS.build(dict(type='OdamNMS', corr_type='cosine'))
    assert isinstance(post, OdamNMS) and post.corr_type is CorrType.COSINE
    with pytest.raises(ValueError, match='corr_high'):
        MODELS.build(dict(type='OdamNMS', corr_high=1.2))
    boxes = torch.tensor([[0., 0., 10., 20.], [0., 0., 10., 20.]])
    dets, keep = post(boxes, torch.tensor([0.2, 0.9]), torch.tensor([0, 0]),
                      torch.ones(2, 4))
    assert keep.tolist() == [1] and dets.shape == (1, 5)
    check_odam_nms_cfg(dict(type='odam_nms', iou_threshold=0.5,
                            corr_low=0.2, corr_high=0.8,
                            corr_type=CorrType.PEARSON, split_thr=10000))


def test_nms_map_size():
    assert nms_map_size((800, 1200)) == (50, 75)
    assert nms_map_size((1333, 800)) == (83, 50)
    assert nms_map_size((100, 100), short_edge=10) == (10, 10)
    assert nms_map_size((10, 5000)) == (50, 25000)
    with pytest.raises(ValueError, match='img_shape'):
        nms_map_size((0, 10))
