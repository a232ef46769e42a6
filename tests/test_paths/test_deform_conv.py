"""The torch-ops deformable convolution equals mmcv's, values and
gradients (float64), and ``straight_through`` keeps values bit for bit."""
import pytest
import torch
from mmcv.ops import deform_conv2d, modulated_deform_conv2d

from mmdet_odam.paths.deform_conv import deform_conv2d_torch, straight_through

CASES = [  # (C, O, k, stride, padding, dilation, groups, deform_groups)
    (8, 6, 3, 1, 1, 1, 1, 1),
    (8, 4, 3, 2, 2, 2, 2, 2),
    (6, 6, 1, 1, 0, 1, 1, 1),
    (4, 8, (3, 1), 1, (1, 0), 1, 1, 4),
]


def _inputs(c, o, k, stride, padding, dilation, groups, dg, seed=0):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    pair = (lambda v: (v, v) if isinstance(v, int) else v)
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    h, w = 9, 11
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    x = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    # offsets up to +-6 px: many taps fall partly or wholly off the map
    off = torch.randn(2, dg * kh * kw * 2, ho, wo, generator=g,
                      dtype=torch.float64) * 3
    weight = torch.randn(o, c // groups, kh, kw, generator=g,
                         dtype=torch.float64)
    mask = torch.rand(2, dg * kh * kw, ho, wo, generator=g,
                      dtype=torch.float64)
    bias = torch.randn(o, generator=g, dtype=torch.float64)
    conv = dict(stride=stride, padding=padding, dilation=dilation,
                groups=groups, deform_groups=dg)
    return x, off, weight, mask, bias, conv


def _grads(out, leaves, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                    dtype=out.dtype)
    return torch.autograd.grad(out, leaves, g)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('modulated', [False, True])
def test_torch_deform_conv_equals_mmcv(case, modulated):
    x, off, weight, mask, bias, conv = _inputs(*case)
    leaves = [x.requires_grad_(), off.requires_grad_(),
              mask.requires_grad_()]
    cv = conv
    args = (cv['stride'], cv['padding'], cv['dilation'], cv['groups'],
            cv['deform_groups'])
    if modulated:
        ref = modulated_deform_conv2d(x, off, mask, weight, bias, *args)
        mine = deform_conv2d_torch(x, off, weight, mask=mask, bias=bias,
                                   **conv)
    else:
        leaves = leaves[:2]
        ref = deform_conv2d(x, off, weight, *args, False, 1)
        mine = deform_conv2d_torch(x, off, weight, **conv)
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(_grads(mine, leaves), _grads(ref, leaves)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_straight_through_keeps_values_and_takes_the_other_gradient():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    value = (x * 3).exp()
    other = (3 * x).exp() + 1e-9  # the same function within rounding
    out = straight_through(value, other * 2)
    assert torch.equal(out, value)
    g, = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, 6 * other)
