"""Hand-computed values for the explanation metrics."""
import math

import numpy as np
import pytest
import torch

from mmdet_odam.evaluation.functional import (
    box_iou, box_to_mask, boxes_to_masks, compactness, curve_auc,
    energy_in_region, energy_pointing_game_box, map_pearson, map_spearman,
    match_well_detected, max_point, odi, odi_box, perturbation_curve,
    pointing_game, pointing_game_box, tracked_score, vea_auc, vea_curve)


def bright_pixel(h, w, r, c):
    m = torch.zeros(h, w)
    m[r, c] = 1.0
    return m


def test_pointing_game_one_bright_pixel():
    m = bright_pixel(10, 10, 5, 5)
    assert max_point(m) == (5, 5)
    assert pointing_game_box(m, (3, 3, 8, 8)) == 1.0
    assert pointing_game_box(m, (6, 6, 9, 9)) == 0.0
    # authors' strict rule: x1 < col < x2
    assert pointing_game_box(m, (5, 3, 8, 8), strict=True) == 0.0
    assert pointing_game_box(m, (5, 3, 8, 8), strict=False) == 1.0
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[5, 5] = True
    assert pointing_game(m, mask) == 1.0
    assert pointing_game(m, ~mask) == 0.0


def test_first_max_on_ties_and_zero_map():
    m = torch.zeros(4, 4)
    m[1, 2] = m[3, 0] = 1.0
    assert max_point(m) == (1, 2)
    z = torch.zeros(4, 4)
    assert max_point(z) is None
    assert pointing_game_box(z, (0, 0, 4, 4)) == 0.0
    # a constant map is uniform: energy = area fraction, never NaN
    assert energy_pointing_game_box(z, (0, 0, 2, 4)) == pytest.approx(0.5)
    assert math.isfinite(compactness(z, (0, 0, 2, 2)))
    assert odi_box(z, [(0, 0, 2, 4), (2, 0, 4, 4)], 0) == pytest.approx(0.5)


def test_energy_pointing_game():
    m = torch.ones(4, 4)
    assert energy_pointing_game_box(m, (0, 0, 2, 4)) == pytest.approx(0.5)
    m = torch.zeros(4, 4)
    m[0, 0], m[3, 3] = 3.0, 1.0
    assert energy_pointing_game_box(m, (0, 0, 1, 1)) == pytest.approx(0.75)
    # fractional box: columns [floor x1, ceil x2)
    assert box_to_mask((0.5, 0.2, 1.2, 1.0), (4, 4)).sum() == 2


def test_box_partly_outside_image():
    m = bright_pixel(6, 6, 0, 5)
    box = (3, -4, 9, 2)  # sticks out right and top
    mask = box_to_mask(box, (6, 6))
    assert mask.sum() == 3 * 2
    assert pointing_game_box(m, box) == 1.0
    assert energy_pointing_game_box(m, box) == pytest.approx(1.0)
    assert box_to_mask((10, 10, 12, 12), (6, 6)).sum() == 0
    # compactness uses the full box size (w=6, h=6)
    assert compactness(m, box) == pytest.approx(0.0)


def test_compactness_known_value():
    m = torch.zeros(5, 5)
    m[0, 0], m[0, 4] = 1.0, 0.5
    # sum S d^2 = 0.5 * 16 = 8 ; sum S = 1.5 ; (w^2 + h^2) / 4 = 8
    assert compactness(m, (0, 0, 4, 4)) == pytest.approx(math.sqrt(2 / 3),
                                                         rel=1e-5)
    # a single point is perfectly compact
    assert compactness(bright_pixel(5, 5, 2, 2), (0, 0, 4, 4)) == 0.0


def test_odi_half_energy_on_other_object():
    m = torch.zeros(8, 8)
    m[1, 1] = 1.0  # target box
    m[1, 6] = 1.0  # other box
    m[7, 0] = 5.0  # background: ignored
    boxes = [(0, 0, 3, 3), (5, 0, 8, 3)]
    assert odi_box(m, boxes, 0) == pytest.approx(0.5)
    m[1, 1] = 3.0
    assert odi_box(m, boxes, 0) == pytest.approx(0.25)
    assert odi_box(m, boxes, 1) == pytest.approx(0.75)
    # single object: nothing can leak
    assert odi_box(m, boxes[:1], 0) == 0.0
    # overlap counts for the other object too (union, binary OR)
    regions = boxes_to_masks([(0, 0, 3, 3), (1, 1, 3, 3)], (8, 8))
    m2 = torch.zeros(8, 8)
    m2[0, 0], m2[2, 2] = 1.0, 1.0
    assert odi(m2, regions, 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match='out of range'):
        odi(m2, regions, 5)


def test_vea_known_map_and_mask():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    m = mask.float().clone()
    m[3, 3] = 0.5
    curve = vea_curve(m, mask)
    np.testing.assert_allclose(curve, [0.8] * 4 + [1.0] * 5)
    assert vea_auc(curve) == pytest.approx(0.8 * 0.3 + 0.9 * 0.1 + 0.4)
    # empty mask and zero map: defined (0), not NaN
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert np.all(vea_curve(m, empty) == 0)
    assert np.all(vea_curve(torch.zeros(4, 4), mask) == 0)


def test_bad_input_errors():
    with pytest.raises(ValueError, match='NaN'):
        pointing_game_box(torch.full((3, 3), float('nan')), (0, 0, 1, 1))
    with pytest.raises(ValueError, match='shape'):
        pointing_game(torch.zeros(3, 3), torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='>= 0'):
        compactness(-torch.ones(3, 3), (0, 0, 1, 1))


def _toy_detector(region):
    """Score = fraction of the pixels of ``region`` still equal to 255."""

    def score_fn(imgs):
        return (imgs[:, 0][:, region] == 255).float().mean(1)

    return score_fn


def test_deletion_toy_detector_known_curve():
    img = torch.full((1, 10, 10), 255.0)
    region = torch.zeros(10, 10, dtype=torch.bool)
    region[2, :] = True  # 10 pixels drive the score
    fn = _toy_detector(region)
    good = perturbation_curve(img, region.float(), fn, 'deletion',
                              n_steps=10, eval_every=1, pixels_per_step=1)
    np.testing.assert_allclose(good['curve'], np.arange(100, -1, -10))
    assert good['auc'] == pytest.approx(50.0)
    assert good['score0'] == 1.0
    bad = perturbation_curve(img, (~region).float(), fn, 'deletion',
                             n_steps=10, eval_every=1, pixels_per_step=1)
    assert bad['auc'] == pytest.approx(100.0)
    ins = perturbation_curve(img, region.float(), fn, 'insertion',
                             n_steps=10, eval_every=5, pixels_per_step=1)
    np.testing.assert_allclose(ins['x'], [0, 0.5, 1.0])
    np.testing.assert_allclose(ins['curve'], [0, 50, 100])
    assert ins['auc'] == pytest.approx(50.0)
    # the map may be given at another resolution (resized to the image)
    big = region.float().repeat_interleave(2, 0).repeat_interleave(2, 1)
    again = perturbation_curve(img, big, fn, 'deletion', n_steps=10,
                               eval_every=1, pixels_per_step=1)
    assert again['auc'] == pytest.approx(50.0)


def test_matching_greedy_one_to_one():
    gt = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60.]])
    pred = torch.tensor([[0, 0, 10, 10.2], [0, 0, 10, 10.5], [20, 20, 30, 30],
                         [50, 50, 60, 70]])
    p, g = match_well_detected(pred, [0, 0, 1, 0], gt, [0, 0, 0], 0.9)
    # pred 2 has the wrong class, pred 3 is too loose: GT 1 and 2 unmatched
    assert p.tolist() == [0] and g.tolist() == [0]
    p, g = match_well_detected(pred, [0, 0, 0, 0], gt, [0, 0, 0], 0.4)
    assert sorted(zip(p.tolist(), g.tolist())) == [(0, 0), (2, 1), (3, 2)]
    assert box_iou(gt, gt).diag().tolist() == [1.0, 1.0, 1.0]
    s = tracked_score(pred, torch.tensor([0.3, 0.8, 0.9, 0.1]),
                      [0, 0, 1, 0], gt[0], 0)
    assert s == pytest.approx(0.8)
    assert tracked_score(pred[:0], torch.zeros(0), [], gt[0], 0) == 0.0


def test_map_similarity():
    a = torch.rand(20, 30)
    assert map_pearson(a, a) == pytest.approx(1.0)
    assert map_spearman(a, 1 - a) == pytest.approx(-1.0)
    assert map_pearson(a, torch.zeros(20, 30)) == 0.0
    assert curve_auc([1, 1]) == pytest.approx(1.0)


def test_energy_in_region_hand_computed():
    heat = torch.tensor([[0., 1., 3.], [0., 0., 4.]])
    region = torch.tensor([[0, 0, 1], [0, 0, 1]], dtype=torch.bool)
    assert energy_in_region(heat, region) == pytest.approx(7 / 8)
    # a constant map is uniform: the region's area fraction (2 of 6 cells)
    assert energy_in_region(torch.zeros(2, 3), region) == pytest.approx(1 / 3)
