"""Per-row vector-Jacobian products: one backward per row through only the
outputs that row uses, the same values as plain autograd."""
import torch
from torch import nn

from mmdet_odam.core.grads import batched_vjp, has_unbatched_ops


def two_towers():
    """A leaf feeding two conv towers (think: a head's cls and box
    towers), each counting how often its backward runs."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    towers = [nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GroupNorm(2, 4),
                            nn.ReLU(), nn.Conv2d(4, 3, 1)).double()
              for _ in range(2)]
    calls = [0, 0]
    outs = []
    for k, tower in enumerate(towers):
        mid = tower[0](x)
        mid.register_hook(lambda g, k=k: calls.__setitem__(k, calls[k] + 1))
        outs.append(tower[1:](mid))
    return x, outs, calls


def test_rows_back_propagate_through_their_own_outputs_only():
    x, outs, calls = two_towers()
    m = 5
    grads = [torch.zeros(m, *o.shape, dtype=o.dtype) for o in outs]
    torch.manual_seed(1)
    for i in range(m):  # rows 0-1: tower 0 only, 2-3: tower 1, 4: both
        for k in ({0} if i < 2 else {1} if i < 4 else {0, 1}):
            grads[k][i, 0, i % 3, i, i] = 1.0 + i
            grads[k][i, 0, 2, 5 - i, 1] = -0.5
    state = {}
    g, = batched_vjp(outs, [x], grads, state)
    assert state['loop'] is True  # convolutions: no vmap batching rule
    assert calls == [3, 3]  # not 5 and 5: zeros are not sent down
    for i in range(m):
        want, = torch.autograd.grad(outs, [x], [gr[i] for gr in grads],
                                    retain_graph=True)
        assert torch.equal(g[i], want)


def test_a_row_that_uses_nothing_gets_zeros_and_an_unused_leaf_none():
    x, outs, _ = two_towers()
    other = torch.zeros(3, requires_grad=True)
    grads = [torch.zeros(3, *o.shape, dtype=o.dtype) for o in outs]
    grads[1][2, 0, 1] = 1.0
    g, none = batched_vjp(outs, [x, other], grads, {})
    assert none is None
    assert g.shape == (3, *x.shape)
    assert not g[:2].any() and g[2].any()


def test_unbatched_ops_are_found_in_the_graph():
    x = torch.randn(2, 3, requires_grad=True)
    lin = nn.Linear(3, 3)
    assert not has_unbatched_ops([lin(x).relu().sigmoid()])
    assert has_unbatched_ops([lin(x).softmax(-1)])
    _, outs, _ = two_towers()
    assert has_unbatched_ops(outs[:1])


def test_batched_rows_without_unbatched_ops_match_autograd():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64)
    y = (x * w).sigmoid() + x.relu()
    grads = [torch.randn(6, *y.shape, dtype=torch.float64)]
    state = {}
    g, = batched_vjp([y], [x], grads, state)
    assert state['loop'] is False  # vmap took every row at once
    for i in range(6):
        want, = torch.autograd.grad(y, x, grads[0][i], retain_graph=True)
        torch.testing.assert_close(g[i], want)
