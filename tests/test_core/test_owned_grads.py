"""First-stage gradients split by owner (one backward per target)."""
import pytest
import torch

from mmdet_odam.core import (row_grads, singular_nodes_zeroed,
                             split_by_owner, staged_row_grads)
from mmdet_odam.core.owned_grads import owner_maps, owner_ranks
from test_staged_grads import (assert_equal_rows_on_own_levels,
                               two_level_head)


def dense_post_processing(anchors, seed=0):
    """A dense head's outputs and a post-processing as mmdet's: sigmoid
    scores, flatten, sort, pick, decode boxes with ``exp``. Rows: the
    picked detections' scores, then their left and right coordinates
    (target-major, as the generic explainer orders them)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64,
                      requires_grad=True)  # 3 classes
    reg = torch.randn(1, 4, 4, 5, generator=g, dtype=torch.float64,
                      requires_grad=True)
    scores = cls.sigmoid().flatten(2)[0].t()  # (20, 3)
    deltas = reg.flatten(2)[0].t()  # (20, 4)
    order = scores.max(1).values.argsort(descending=True)
    scores, deltas = scores[order], deltas[order]
    pick = torch.as_tensor(anchors)
    w = deltas[pick, 2].exp() * 8
    left = deltas[pick, 0] * 4 - w / 2
    right = deltas[pick, 0] * 4 + w / 2
    top = scores[pick].max(1).values
    ys = torch.cat([top, -left, right])
    return ys, [cls, reg]


def per_row(ys, tensors):
    return [torch.autograd.grad(ys[r], tensors, retain_graph=True,
                                allow_unused=True) for r in range(len(ys))]


def test_split_equals_one_backward_per_row():
    k = 5
    ys, tensors = dense_post_processing(list(range(0, 2 * k, 2)))
    owners = torch.arange(k).repeat(3)
    split = split_by_owner(ys, owners, tensors)
    assert split is not None
    rows = torch.arange(len(ys))
    ref = per_row(ys, tensors)
    for j in range(len(tensors)):
        got = split.grads(rows, j)
        want = torch.stack([r[j] for r in ref])
        assert torch.equal(got, want), j
    nonzero = torch.stack([torch.stack([g.ne(0).any() for g in r])
                           for r in ref]).any(1)
    assert nonzero.all()  # no row is trivially 0
    # the score rows do not reach the box deltas, the box rows not the
    # class scores: the maps say which detection owns each element
    maps = owner_maps(ys, owners, tensors)
    assert sorted(maps[0].unique().tolist()) == [-1, 0, 1, 2, 3, 4]
    assert (maps[1] >= 0).sum() == 2 * k  # dx and dw of each detection


def test_two_detections_of_one_candidate_decline():
    """Detections 0 and 2 share a candidate (e.g. two classes of one
    anchor): their box rows reach the same deltas; no split."""
    ys, tensors = dense_post_processing([0, 2, 0])
    assert split_by_owner(ys, torch.arange(3).repeat(3), tensors) is None
    # as one owner the rows may share: split again
    owners = torch.tensor([0, 1, 0]).repeat(3)
    split = split_by_owner(ys, owners, tensors)
    ref = per_row(ys, tensors)
    rows = torch.arange(len(ys))
    for j in range(2):
        assert torch.equal(split.grads(rows, j),
                           torch.stack([r[j] for r in ref]))


def test_nan_for_a_zero_upstream_declines():
    """sqrt of an exact zero: 0 * inf is NaN in every probe."""
    x = torch.tensor([4.0, 1.0, 9.0], requires_grad=True)
    pad = torch.stack([x[0], x[1] * 0.0, x[2]])
    ys = pad.sqrt()[[0, 2]]
    assert split_by_owner(ys, torch.arange(2), [x]) is None
    ys2 = x.sqrt()[[0, 2]]  # no singular node: split
    split = split_by_owner(ys2, torch.arange(2), [x])
    torch.testing.assert_close(split.grads(torch.arange(2), 0),
                               torch.tensor([[0.25, 0, 0], [0, 0, 1 / 6]]))


def test_owner_ranks_hand_computed():
    ranks = owner_ranks(torch.tensor([0, 1, 0, 2, 1, 0]))
    assert ranks.tolist() == [0, 0, 1, 0, 1, 2]


def test_singular_node_hooks_live_for_the_block():
    x = torch.tensor([4.0, 1.0], requires_grad=True)
    y = torch.stack([x[0], x[1] * 0.0]).sqrt()[0]
    with singular_nodes_zeroed(y) as count:
        assert count == 1
        (g, ) = torch.autograd.grad(y, x, retain_graph=True)
        assert torch.isfinite(g).all()
    (g, ) = torch.autograd.grad(y, x, retain_graph=True)
    assert torch.isnan(g).any()  # the graph is as autograd built it


def test_staged_grads_with_the_split_equal_plain_rows():
    """Through a conv per level (the second stage) as the generic path;
    owners 0 and 1 have two rows each (two ranks)."""
    ys, leaves, groups = two_level_head()
    owners = torch.tensor([0, 1, 0, 1, 2, 3])
    state = {'owned': split_by_owner(ys, owners, [t for g in groups
                                                  for t in g])}
    assert state['owned'] is not None
    rows = torch.arange(len(ys))
    staged = staged_row_grads(ys, leaves, groups, rows, state)
    assert_equal_rows_on_own_levels(staged, row_grads(ys, leaves, rows))


@pytest.mark.parametrize('k, n', [(1, 2), (2, 2), (3, 3), (6, 4), (10, 5),
                                  (11, 6), (100, 9)])
def test_owner_codes_distinct_with_one_weight(k, n):
    """Distinct codes of n // 2 bits, n the least with C(n, n // 2) >= k:
    the OR of two of them, or all n bits, has more bits than a code."""
    from mmdet_odam.core.owned_grads import owner_codes
    codes = owner_codes(k)
    assert codes.shape == (k, n)
    assert (codes.sum(1) == n // 2).all()
    assert len({tuple(c.tolist()) for c in codes}) == k


def test_shared_elements_decline_without_the_remaining_probes():
    # every row reads every element (queries that attend to each other):
    # 10 owners take 5 probes, the counts pass the code weight (2) at the
    # third, and the split declines there
    x = torch.randn(6, requires_grad=True)
    mid = x * 2
    probes = []
    mid.register_hook(lambda g: probes.append(1))
    ys = torch.stack([mid.sum() * (i + 1) for i in range(10)])
    assert owner_maps(ys, torch.arange(10), [mid]) is None
    assert len(probes) == 3
