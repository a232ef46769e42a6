"""Odam-Train loss (paper Eq. 3) against values computed by hand."""
import math

import pytest
import torch

from mmdet_odam.losses import (OdamTrainLoss, odam_train_loss,
                               select_odam_samples)

EPS = 1e-4
L1 = -math.log(1 - EPS)  # loss of a clamped cos = 1 (ref with itself) or 0


def _two_objects():
    # object 0: a1 (ref, IoU .9), a2; object 1: b1 (ref, IoU .8), b2
    maps = torch.tensor([[1., 0.], [1., 1.], [0., 1.], [1., 2.]],
                        requires_grad=True)
    gt = torch.tensor([0, 0, 1, 1])
    ious = torch.tensor([0.9, 0.5, 0.8, 0.6])
    img = torch.zeros(4, dtype=torch.long)
    return maps, gt, ious, img


def test_paper_loss_hand_values():
    maps, gt, ious, img = _two_objects()
    out = OdamTrainLoss(loss_weight=2.0)(maps, gt, ious, img)
    # ref a1: pos a1 (1), a2 (1/sqrt2); neg b1 (0), b2 (1/sqrt5)
    # ref b1: pos b1 (1), b2 (2/sqrt5); neg a1 (0), a2 (1/sqrt2)
    con = 2 * L1 - math.log(1 / math.sqrt(2)) - math.log(2 / math.sqrt(5))
    sep = 2 * L1 - math.log(1 - 1 / math.sqrt(5)) - math.log(
        1 - 1 / math.sqrt(2))
    assert out['loss_odam_con'].item() == pytest.approx(2 * con / 8, rel=1e-5)
    assert out['loss_odam_sep'].item() == pytest.approx(2 * sep / 8, rel=1e-5)
    (out['loss_odam_con'] + out['loss_odam_sep']).backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0


def test_sep_weight_scales_the_separation_term_only():
    maps, gt, ious, img = _two_objects()
    base = OdamTrainLoss(loss_weight=0.5)(maps, gt, ious, img)
    out = OdamTrainLoss(loss_weight=0.5, sep_weight=2.0)(maps, gt, ious, img)
    assert out['loss_odam_con'].item() == pytest.approx(
        base['loss_odam_con'].item(), rel=1e-6)
    assert out['loss_odam_sep'].item() == pytest.approx(
        2 * base['loss_odam_sep'].item(), rel=1e-6)
    with pytest.raises(ValueError, match='sep_weight'):
        OdamTrainLoss(sep_weight=-1.)


def test_scale_invariance_and_order_invariance():
    maps, gt, ious, img = _two_objects()
    a = odam_train_loss(maps, gt, ious, img)
    perm = torch.tensor([3, 1, 0, 2])
    b = odam_train_loss(maps[perm] * 7., gt[perm], ious[perm], img[perm])
    for x, y in zip(a, b):
        assert x.item() == pytest.approx(y.item(), rel=1e-5)


def test_image_reference_authors_fcos():
    maps, gt, ious, img = _two_objects()
    con, sep = odam_train_loss(maps, gt, ious, img, reference='image')
    # single ref a1: pos a1, a2; neg b1, b2 -> 4 pairs
    assert con.item() == pytest.approx(
        (L1 - math.log(1 / math.sqrt(2))) / 4, rel=1e-5)
    assert sep.item() == pytest.approx(
        (L1 - math.log(1 - 1 / math.sqrt(5))) / 4, rel=1e-5)


def test_overlap_negatives_and_iou_weighting():
    maps, gt, ious, img = _two_objects()
    # b2 overlaps a1; b1 overlaps nothing of object 0; a2 overlaps b1
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.],
                          [25., 25., 35., 35.], [5., 5., 15., 15.]])
    con, sep = odam_train_loss(
        maps, gt, ious, img, boxes=boxes, negatives='overlap',
        iou_weighted=True)
    # ref a1: pos a1 (w 1), a2 (w .5/.9); neg b2 only
    # ref b1: pos b1 (w 1), b2 (w .6/.8); neg a2 only
    c = 2 * L1 - (.5 / .9) * math.log(1 / math.sqrt(2)) - (
        .6 / .8) * math.log(2 / math.sqrt(5))
    s = -math.log(1 - 1 / math.sqrt(5)) - math.log(1 - 1 / math.sqrt(2))
    assert con.item() == pytest.approx(c / 6, rel=1e-5)
    assert sep.item() == pytest.approx(s / 6, rel=1e-5)
    with pytest.raises(ValueError, match='boxes'):
        odam_train_loss(maps, gt, ious, img, negatives='overlap')


def test_objects_are_per_image_and_image_norm():
    maps, gt, ious, img = _two_objects()
    # the same pattern in two images; gt indices repeat across images
    m2 = torch.cat([maps, maps])
    g2, i2 = torch.cat([gt, gt]), torch.cat([ious, ious])
    im2 = torch.cat([img, img + 1])
    one = odam_train_loss(maps, gt, ious, img)
    both = odam_train_loss(m2, g2, i2, im2)  # batch norm: same mean
    per_img = odam_train_loss(m2, g2, i2, im2, normalize='image')  # summed
    for a, b, c in zip(one, both, per_img):
        assert b.item() == pytest.approx(a.item(), rel=1e-5)
        assert c.item() == pytest.approx(2 * a.item(), rel=1e-5)


def test_zero_cases_are_finite_and_attached():
    loss = OdamTrainLoss()
    # single object: skipped by default (min_objects=2)
    maps = torch.rand(3, 5, requires_grad=True)
    out = loss(maps, torch.zeros(3, dtype=torch.long), torch.rand(3),
               torch.zeros(3, dtype=torch.long))
    for v in out.values():
        assert v.item() == 0 and v.requires_grad
    sum(out.values()).backward()
    # ... but gets the consistency term with min_objects=1
    con, sep = odam_train_loss(maps, torch.zeros(3, dtype=torch.long),
                               torch.tensor([.9, .1, .2]),
                               torch.zeros(3, dtype=torch.long),
                               min_objects=1)
    assert con.item() > 0 and sep.item() == 0
    # no samples at all
    empty = torch.zeros(0, 5, requires_grad=True)
    out = loss(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0),
               torch.zeros(0, dtype=torch.long))
    assert all(v.item() == 0 and v.requires_grad for v in out.values())
    # all-zero maps: cos clamped to eps -> finite, -log(eps) per positive
    zeros = torch.zeros(4, 6, requires_grad=True)
    gt = torch.tensor([0, 0, 1, 1])
    out = loss(zeros, gt, torch.rand(4), torch.zeros(4, dtype=torch.long))
    assert out['loss_odam_con'].item() == pytest.approx(
        -math.log(EPS) * 4 / 8, rel=1e-5)
    sum(out.values()).backward()
    assert torch.isfinite(zeros.grad).all()


def test_select_samples_caps():
    ious = torch.tensor([.1, .9, .5, .7, .3, .8])
    img = torch.tensor([0, 0, 0, 0, 1, 1])
    gt = torch.tensor([0, 1, 1, 2, 0, 0])
    keep = select_odam_samples(ious, img, gt, max_samples=2)
    assert keep.tolist() == [1, 3, 4, 5]
    # image 0 ranked 1 (obj1), 3 (obj2), 2 (obj1), 0 (obj0):
    # k=1: 1*1, k=2: 2*2=4, k=3: 2*3=6, k=4: 3*4=12 -> max_pairs 6 keeps 3
    keep = select_odam_samples(ious, img, gt, max_pairs=6)
    assert keep.tolist() == [1, 2, 3, 4, 5]
    # the module applies the caps itself: loss equals loss on the subset
    maps = torch.rand(6, 4)
    a = OdamTrainLoss(max_samples=2, min_objects=1)(maps, gt, ious, img)
    k = torch.tensor([1, 3, 4, 5])
    b = OdamTrainLoss(max_samples=None, min_objects=1)(
        maps[k], gt[k], ious[k], img[k])
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-6)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match='reference'):
        OdamTrainLoss(reference='best')
    with pytest.raises(ValueError, match='max_samples'):
        OdamTrainLoss(max_samples=0)
    with pytest.raises(ValueError, match='eps'):
        OdamTrainLoss(eps=0.7)
    with pytest.raises(ValueError, match='gt_inds'):
        OdamTrainLoss()(torch.rand(3, 2), torch.zeros(2, dtype=torch.long),
                        torch.rand(3), torch.zeros(3, dtype=torch.long))


def test_registered():
    from mmdet.registry import MODELS
    loss = MODELS.build(dict(type='OdamTrainLoss', loss_weight=.5,
                             map_size=(8, 10)))
    assert isinstance(loss, OdamTrainLoss) and loss.out_size((64, 64)) == (
        8, 10)
    assert OdamTrainLoss().out_size((320, 480)) == (20, 30)


def test_select_per_object_keeps_references():
    ious = torch.tensor([.1, .9, .5, .7, .3, .8, .6])
    img = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    gt = torch.tensor([0, 1, 1, 1, 0, 0, 0])
    keep = select_odam_samples(ious, img, gt, max_per_object=2)
    # image 0: obj 1 -> 1 (.9), 3 (.7); obj 0 -> 4 (.3), 0 (.1); image 1 both
    assert keep.tolist() == [0, 1, 3, 4, 5, 6]
    keep = select_odam_samples(ious, img, gt, max_per_object=1)
    assert keep.tolist() == [1, 4, 5]


def _two_objects_pattern(maps):
    gt = torch.tensor([0, 0, 1, 1])
    ious = torch.tensor([0.9, 0.5, 0.8, 0.6])
    return maps, gt, ious, torch.zeros(4, dtype=torch.long)


def test_identical_maps_hand_values():
    # every map the same: all 8 cosines clamp to 1 - eps. 2 refs x 4 samples
    # = 8 pairs: 4 positive (-log(1 - eps)), 4 negative (-log(eps))
    maps = torch.ones(4, 6, requires_grad=True)
    con, sep = odam_train_loss(*_two_objects_pattern(maps))
    assert con.item() == pytest.approx(4 * L1 / 8, abs=1e-7)
    # float32: 1 - (1 - eps) carries a relative error ~1e-5
    assert sep.item() == pytest.approx(4 * -math.log(EPS) / 8, rel=1e-4)
    # balanced: each term the mean over its own 4 pairs
    con, sep = odam_train_loss(*_two_objects_pattern(maps),
                               normalize='balanced')
    assert con.item() == pytest.approx(L1, abs=1e-6)
    assert sep.item() == pytest.approx(-math.log(EPS), rel=1e-4)


def test_orthogonal_maps_are_the_minimum():
    # each object's maps on its own pixels: cos 1 within, 0 across -> every
    # pair at its clamp, the smallest value the loss can take
    maps = torch.tensor([[1., 1., 0., 0.], [2., 2., 0., 0.],
                         [0., 0., 3., 1.], [0., 0., 3., 1.]])
    con, sep = odam_train_loss(*_two_objects_pattern(maps))
    assert con.item() == pytest.approx(4 * L1 / 8, abs=1e-7)
    assert sep.item() == pytest.approx(4 * L1 / 8, abs=1e-7)
    noisy = maps + 0.3 * torch.rand(4, 4, generator=torch.Generator()
                                    .manual_seed(0))
    c2, s2 = odam_train_loss(*_two_objects_pattern(noisy))
    assert c2.item() > con.item() and s2.item() > sep.item()


def test_balanced_norm_and_crowd_weighting():
    # R objects with one sample each (the ref): R positive pairs, R(R-1)
    # negative ones. Under 'batch' the separation term carries (R-1)/R of
    # the pairs; 'balanced' divides each sum by its own count.
    r = 5
    maps = torch.eye(r) + 0.5  # cos(i, j) = c for i != j
    c = (2 * 0.5 * 1.5 + 0.25 * (r - 2)) / (1.5 ** 2 + 0.25 * (r - 1))
    gt = torch.arange(r)
    img = torch.zeros(r, dtype=torch.long)
    ious = torch.linspace(0.5, 0.9, r)
    con, sep = odam_train_loss(maps, gt, ious, img)
    assert con.item() == pytest.approx(r * L1 / r ** 2, abs=1e-7)
    assert sep.item() == pytest.approx(
        -math.log(1 - c) * (r - 1) / r, rel=1e-4)
    con, sep = odam_train_loss(maps, gt, ious, img, normalize='balanced')
    assert con.item() == pytest.approx(L1, abs=1e-6)
    assert sep.item() == pytest.approx(-math.log(1 - c), rel=1e-4)


def test_detach_reference_same_value_no_gradient_through_ref():
    maps, gt, ious, img = _two_objects()
    a = odam_train_loss(maps, gt, ious, img)
    b = odam_train_loss(maps, gt, ious, img, detach_reference=True)
    for x, y in zip(a, b):
        assert x.item() == pytest.approx(y.item(), rel=1e-6)
    # one object, refs a1 (IoU .9): with the reference detached, the
    # consistency pair (a1, a2) moves a2 only, and a1's own pair sits at the
    # clamp (zero gradient)
    m = torch.tensor([[1., 0.], [1., 1.]], requires_grad=True)
    con, _ = odam_train_loss(m, torch.tensor([0, 0]), torch.tensor([.9, .5]),
                             torch.zeros(2, dtype=torch.long), min_objects=1,
                             detach_reference=True)
    con.backward()
    assert m.grad[0].abs().sum() == 0 and m.grad[1].abs().sum() > 0
    assert OdamTrainLoss(detach_reference=True).detach_reference
