"""Shared pure helpers: box IoU / checks / matching, detection selection,
per-row batched gradients."""
import pytest
import torch

from mmdet_odam.core import (as_leaves, box_iou, check_boxes, match_boxes,
                             row_grads, top_scoring)


def test_box_iou_hand_values():
    a = torch.tensor([[0., 0., 2., 2.], [0., 0., 1., 1.]])
    b = torch.tensor([[1., 1., 3., 3.], [0., 0., 2., 2.], [5., 5., 5., 6.]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    # 1 / (4 + 4 - 1); identical boxes; empty box -> 0
    assert torch.allclose(iou[0], torch.tensor([1 / 7, 1.0, 0.0]))
    assert torch.allclose(iou[1], torch.tensor([0.0, 0.25, 0.0]))


def test_check_boxes_errors_and_tolerance():
    b = check_boxes([[-0.5, 0, 10.5, 5]], (5, 10))  # within 1 px
    assert b.dtype == torch.float32 and b.shape == (1, 4)
    with pytest.raises(ValueError, match='outside the image'):
        check_boxes([[0, 0, 12, 5]], (5, 10))
    with pytest.raises(ValueError, match='or empty'):
        check_boxes([[3, 0, 3, 5]], (5, 10))


def test_match_boxes_iou_label_and_score_tie():
    cand = torch.tensor([[0., 0., 2., 2.], [0., 0., 2., 2.], [4., 4., 6., 6.]])
    scores = torch.tensor([0.2, 0.7, 0.9])
    labels = torch.tensor([0, 1, 0])
    given = torch.tensor([[0., 0., 2., 2.], [4., 4., 6., 6.]])
    # equal IoU for candidates 0 and 1: the higher score wins
    assert match_boxes(cand, scores, labels, given).tolist() == [1, 2]
    # restricted to class 0
    assert match_boxes(cand, scores, labels, given,
                       [0, 0]).tolist() == [0, 2]
    with pytest.raises(ValueError, match='no candidate of class 2'):
        match_boxes(cand, scores, labels, given, [2, 0])
    with pytest.raises(ValueError, match='one entry per box'):
        match_boxes(cand, scores, labels, given, [0])


def test_top_scoring_threshold_order_topk():
    s = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7])
    assert top_scoring(s, 0.3).tolist() == [1, 4, 2, 3]
    assert top_scoring(s, 0.3, 2).tolist() == [1, 4]
    assert top_scoring(s, 0.95).numel() == 0


def test_row_grads_equal_per_row_backward():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    (leaf, ), _ = as_leaves((x, ))
    unused = torch.zeros(2, requires_grad=True)
    w = torch.randn(4)
    ys = (leaf ** 2 * w).sum(1)  # row i depends on leaf[i] only
    rows = torch.tensor([2, 0])
    ref = torch.stack([torch.autograd.grad(ys[int(r)], leaf,
                                           retain_graph=True)[0]
                       for r in rows])
    g, g_unused = row_grads(ys, [leaf, unused], rows)
    assert g_unused is None
    assert torch.allclose(g, ref)
    state = {'loop': True}  # the per-row fallback gives the same
    g2, _ = row_grads(ys, [leaf, unused], rows, state)
    assert torch.allclose(g2, ref)


def test_as_leaves_rejects_non_tensors():
    with pytest.raises(ValueError, match='cannot be explained'):
        as_leaves({'a': torch.zeros(1)})
