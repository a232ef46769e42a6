"""Two-stage per-row gradients through a dense head's per-level outputs."""
import torch

from mmdet_odam.core import only_through, row_grads, staged_row_grads


def two_level_head(seed=0):
    """Two levels, a conv 'tower' each, post-processing that flattens,
    concatenates and picks rows (as a dense head's predict does)."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64,
                     requires_grad=True)
    x2 = torch.randn(1, 3, 3, 3, generator=g, dtype=torch.float64,
                     requires_grad=True)
    w = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    o1 = torch.nn.functional.conv2d(x1, w, padding=1).tanh()
    o2 = torch.nn.functional.conv2d(x2, w, padding=1).tanh()
    flat = torch.cat([o1.flatten(), o2.flatten()])
    pick = torch.tensor([3, 60, 7, 55, 49, 51])  # rows on both levels
    ys = flat.sigmoid()[pick] * torch.arange(1, 7, dtype=torch.float64)
    return ys, [x1, x2], [[o1], [o2]]


def assert_equal_rows_on_own_levels(staged, plain):
    """Staged gradients of :func:`two_level_head`'s rows equal the plain
    ones, and each row reaches its own level only."""
    for a, b in zip(staged, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # rows of level 2 (flat index >= 50) do not reach level 1, and back
    on2 = torch.tensor([False, True, False, True, False, True])
    assert staged[0][on2].abs().max() == 0
    assert staged[1][~on2].abs().max() == 0
    assert staged[0][~on2].abs().amax((1, 2, 3, 4)).min() > 0


def test_staged_equals_one_stage_backward_for_every_row():
    ys, leaves, groups = two_level_head()
    assert only_through(ys, [t for g in groups for t in g], leaves)
    rows = torch.arange(len(ys))
    plain = row_grads(ys, leaves, rows)
    staged = staged_row_grads(ys, leaves, groups, rows)
    assert_equal_rows_on_own_levels(staged, plain)


def test_rows_of_one_level_leave_the_other_leaf_unused():
    ys, leaves, groups = two_level_head()
    staged = staged_row_grads(ys, leaves, groups, torch.tensor([0, 2]))
    assert staged[1] is None and staged[0].shape == (2, 1, 3, 5, 5)


def test_a_path_around_the_outputs_is_detected():
    ys, leaves, groups = two_level_head()
    around = ys + leaves[0].sum()  # a direct path from x1 to the rows
    assert not only_through(around, [t for g in groups for t in g], leaves)


def test_part_of_a_multi_output_op_is_no_stop():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    a, b = (x * 2).split(2)
    ys = (a.sum(1) + b.sum(1)).sigmoid()
    assert not only_through(ys, [a], [x])  # b bypasses the stop at a
    assert only_through(ys, [a, b], [x])
