"""Deformable convolution in plain torch ops, for its backward.

The same function as mmcv's ``deform_conv2d`` / ``modulated_deform_conv2d``
(bilinear samples at the offset kernel taps, zero outside the map, then a
grouped matrix product with the weight), written with ``grid_sample`` and
``einsum`` so that autograd differentiates it with torch's own kernels.
On the CPU mmcv's backward of the input and offsets is about 9.5x slower
than this one (``benchmarks/bench_deform_conv.py``); the explainers take
the gradient through this function and keep mmcv's forward values
(:func:`straight_through`).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Pair = Tuple[int, int]


def _tap_positions(offset: Tensor, in_hw: Pair, kernel: Pair, stride: Pair,
                   padding: Pair, dilation: Pair, deform_groups: int
                   ) -> Tensor:
    """Sampling grid (B * dg, k * Ho, Wo, 2) in ``grid_sample``'s
    normalised (x, y) coordinates (``align_corners=True``) of every kernel
    tap, from mmcv's offsets (B, dg * k * 2, Ho, Wo) laid out as
    ``[y0, x0, y1, x1, ...]`` per deformable group."""
    b, _, ho, wo = offset.shape
    kh, kw = kernel
    k = kh * kw
    off = offset.view(b, deform_groups, k, 2, ho, wo)
    kw_ = dict(dtype=offset.dtype, device=offset.device)
    ys = torch.arange(ho, **kw_) * stride[0] - padding[0]
    xs = torch.arange(wo, **kw_) * stride[1] - padding[1]
    ky = (torch.arange(kh, **kw_) * dilation[0]).repeat_interleave(kw)
    kx = (torch.arange(kw, **kw_) * dilation[1]).repeat(kh)
    py = ys.view(1, 1, 1, ho, 1) + ky.view(1, 1, k, 1, 1) + off[:, :, :, 0]
    px = xs.view(1, 1, 1, 1, wo) + kx.view(1, 1, k, 1, 1) + off[:, :, :, 1]
    h, w = in_hw
    gx = px * (2.0 / max(w - 1, 1)) - 1
    gy = py * (2.0 / max(h - 1, 1)) - 1
    return torch.stack([gx, gy], -1).view(b * deform_groups, k * ho, wo, 2)


def deform_conv2d_torch(x: Tensor, offset: Tensor, weight: Tensor,
                        stride: Pair = (1, 1), padding: Pair = (0, 0),
                        dilation: Pair = (1, 1), groups: int = 1,
                        deform_groups: int = 1, mask: Optional[Tensor] = None,
                        bias: Optional[Tensor] = None) -> Tensor:
    """mmcv's (modulated) deformable convolution in torch ops.

    Args:
        x (Tensor): (B, C, H, W) input.
        offset (Tensor): (B, dg * kh * kw * 2, Ho, Wo), mmcv's layout.
        weight (Tensor): (O, C / groups, kh, kw).
        stride, padding, dilation (tuple): (h, w) each.
        groups (int): convolution groups.
        deform_groups (int): groups of channels sharing one offset field.
        mask (Tensor, optional): (B, dg * kh * kw, Ho, Wo) modulation
            (DCNv2); None for DCNv1.
        bias (Tensor, optional): (O,).

    Returns:
        Tensor: (B, O, Ho, Wo).
    """
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    k = kh * kw
    grid = _tap_positions(offset, (h, w), (kh, kw), stride, padding,
                          dilation, deform_groups)
    cols = F.grid_sample(x.reshape(b * deform_groups, c // deform_groups,
                                   h, w), grid, mode='bilinear',
                         padding_mode='zeros', align_corners=True)
    cols = cols.view(b, deform_groups, c // deform_groups, k, ho * wo)
    if mask is not None:
        cols = cols * mask.view(b, deform_groups, 1, k, ho * wo)
    cols = cols.reshape(b, groups, (c // groups) * k, ho * wo)
    out = torch.einsum('gok,bgkl->bgol',
                       weight.reshape(groups, o // groups, -1), cols)
    out = out.reshape(b, o, ho, wo)
    return out if bias is None else out + bias.view(1, o, 1, 1)


def straight_through(value: Tensor, grad_path: Tensor) -> Tensor:
    """``value`` (same numbers, bit for bit) whose gradient is that of
    ``grad_path`` (the same function computed another way)."""
    return value.detach() + (grad_path - grad_path.detach())
