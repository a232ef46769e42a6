"""Token <-> level leaves and per-row gradients (pure torch)."""
import pytest
import torch

from mmdet_odam.core import row_grads, tokens_as_level_leaves


def test_tokens_round_trip_and_gradient_lands_on_the_right_cell():
    torch.manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    tokens = torch.randn(2, 16, 5)
    new, leaves = tokens_as_level_leaves(tokens, shapes)
    torch.testing.assert_close(new, tokens)
    assert [tuple(lf.shape) for lf in leaves] == [(2, 5, 3, 4), (2, 5, 2, 2)]
    # token 13 = level 1, row 0, col 1 (12 tokens of level 0 before it)
    new[1, 13, 2].backward()
    assert leaves[1].grad[1, 2, 0, 1] == 1 and leaves[1].grad.sum() == 1
    assert leaves[0].grad is None or leaves[0].grad.abs().sum() == 0


def test_tokens_that_do_not_tile_the_levels_are_refused():
    with pytest.raises(ValueError, match='do not tile'):
        tokens_as_level_leaves(torch.zeros(1, 10, 3), [(3, 3)])


def test_row_grads_fills_zeros_for_rows_that_skip_a_leaf():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    ys = torch.stack([a.sum(), (2 * a).sum(), b.sum(), a[0] * 3, b[1]])
    for state in ({}, {'loop': True}):
        ga, gb = row_grads(ys, [a, b], torch.arange(5), state)
        torch.testing.assert_close(ga[:, 0], torch.tensor([1., 2, 0, 3, 0]))
        torch.testing.assert_close(gb.sum(1), torch.tensor([0., 0, 3, 0, 1]))


def test_zero_times_infinite_derivative_contributes_zero():
    """sqrt of an exact zero (PAA pads its scores with zeros) would turn
    the whole gradient into NaN; its limit, 0, is what the hook gives."""
    from mmdet_odam.core import zero_nan_at_singular_nodes
    x = torch.tensor([4.0, 1.0], requires_grad=True)
    pad = torch.stack([x[0], x[1] * 0.0])  # second entry exactly 0
    y = (pad * x.sum()).sqrt()[0]
    (g_nan, ) = torch.autograd.grad(y, x, retain_graph=True)
    assert torch.isnan(g_nan).any()  # what autograd gives by itself
    assert zero_nan_at_singular_nodes(y) == 1
    (g, ) = torch.autograd.grad(y, x)
    # y = sqrt(x0 * (x0 + x1)): dy/dx0 = (2 x0 + x1) / (2 y), dy/dx1 = x0 / 2y
    yv = (4.0 * 5.0) ** 0.5
    torch.testing.assert_close(g, torch.tensor([9.0 / (2 * yv), 4.0 / (2 * yv)]))
