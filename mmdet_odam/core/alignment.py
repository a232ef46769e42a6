"""Map feature-level heat maps back to image pixels.

Convention (mmdet's priors): cell ``j`` of a level with stride ``s`` covers
pixels ``[j*s, (j+1)*s)`` of the padded network input, its centre is at
``(j + 0.5) * s``. A pixel is sampled at its centre, bilinearly, clamped at
the map border. The original image maps to the top-left ``img_shape``
region of the padded input through the resize factor, so padding and resize
are undone in one exact sampling step (no intermediate resize).
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def _pair(v) -> Tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    return float(v[0]), float(v[1])


def sample_level_maps(maps: Tensor, stride, out_size: Sequence[int],
                      pixel_scale) -> Tensor:
    """Sample level maps on an output pixel grid.

    Args:
        maps (Tensor): (N, h, w) maps on a feature level.
        stride (float | tuple): level stride (sy, sx) in input pixels.
        out_size (tuple): (H_o, W_o) output grid.
        pixel_scale (float | tuple): (sy, sx) input pixels per output pixel.

    Returns:
        Tensor: (N, H_o, W_o), differentiable w.r.t. ``maps``.
    """
    n, h, w = maps.shape
    ho, wo = int(out_size[0]), int(out_size[1])
    sty, stx = _pair(stride)
    py, px = _pair(pixel_scale)
    dev = maps.device
    ys = (torch.arange(ho, device=dev, dtype=torch.float32) + 0.5) * py
    xs = (torch.arange(wo, device=dev, dtype=torch.float32) + 0.5) * px
    gy = 2 * ys / (sty * h) - 1
    gx = 2 * xs / (stx * w) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing='xy'), -1)
    grid = grid[None].expand(n, ho, wo, 2).to(maps.dtype)
    if n == 0:
        return maps.new_zeros(0, ho, wo)
    out = F.grid_sample(maps[:, None], grid, mode='bilinear',
                        padding_mode='border', align_corners=False)
    return out[:, 0]


def level_to_image(maps: Tensor, stride, img_shape: Sequence[int],
                   ori_shape: Sequence[int], scale_factor=None) -> Tensor:
    """Level maps -> original image (undo padding and resize exactly).

    Args:
        maps (Tensor): (N, h, w).
        stride: level stride in network-input pixels.
        img_shape (tuple): (H, W) of the resized image before padding.
        ori_shape (tuple): (H, W) of the original image.
        scale_factor (tuple, optional): mmdet ``(w_scale, h_scale)``; if
            missing it is ``img_shape / ori_shape``.

    Returns:
        Tensor: (N, H_ori, W_ori).
    """
    if scale_factor is None:
        sy = img_shape[0] / ori_shape[0]
        sx = img_shape[1] / ori_shape[1]
    else:
        sx, sy = float(scale_factor[0]), float(scale_factor[1])
    return sample_level_maps(maps, stride, ori_shape, (sy, sx))


def level_to_padded(maps: Tensor, stride, pad_shape: Sequence[int],
                    out_size: Sequence[int]) -> Tensor:
    """Level maps -> a grid of ``out_size`` covering the padded input."""
    return sample_level_maps(
        maps, stride, out_size,
        (pad_shape[0] / out_size[0], pad_shape[1] / out_size[1]))


def paste_patches(patches: Tensor, centers: Tensor,
                  level_size: Sequence[int]) -> Tensor:
    """Paste square patches centred on cells into zero level maps.

    Args:
        patches (Tensor): (N, P, P), P = 2r+1.
        centers (Tensor): (N, 2) long (y, x) cell of each patch centre.
        level_size (tuple): (h, w).

    Returns:
        Tensor: (N, h, w); parts outside the map are dropped.
    """
    n, p, _ = patches.shape
    r = (p - 1) // 2
    h, w = int(level_size[0]), int(level_size[1])
    hp, wp = h + 2 * r, w + 2 * r
    ar = torch.arange(p, device=patches.device)
    ys = centers[:, 0:1] + ar[None]  # (N, P) rows in the padded canvas
    xs = centers[:, 1:2] + ar[None]
    idx = (ys[:, :, None] * wp + xs[:, None, :]).reshape(n, -1)
    canvas = patches.new_zeros(n, hp * wp)
    canvas = canvas.scatter(1, idx, patches.reshape(n, -1))
    return canvas.reshape(n, hp, wp)[:, r:r + h, r:r + w]


def gather_patches(feat: Tensor, img_inds: Tensor, centers: Tensor,
                   radius: int) -> Tuple[Tensor, Tensor]:
    """Gather (2r+1)^2 windows of a zero-padded feature map.

    Args:
        feat (Tensor): (B, C, h, w).
        img_inds (Tensor): (N,) image of each window.
        centers (Tensor): (N, 2) long (y, x) centre cells.
        radius (int): r.

    Returns:
        tuple: patches (N, C, P, P) (differentiable w.r.t. ``feat``) and the
        validity mask (N, 1, P, P) (1 where the window is inside the map).
    """
    b, c, h, w = feat.shape
    r = int(radius)
    padded = F.pad(feat, (r, r, r, r))
    ar = torch.arange(2 * r + 1, device=feat.device)
    ys = centers[:, 0:1] + ar[None]
    xs = centers[:, 1:2] + ar[None]
    patches = padded[img_inds[:, None, None], :, ys[:, :, None],
                     xs[:, None, :]]  # (N, P, P, C)
    patches = patches.permute(0, 3, 1, 2)
    vy = (ys - r >= 0) & (ys - r < h)
    vx = (xs - r >= 0) & (xs - r < w)
    mask = (vy[:, :, None] & vx[:, None, :])[:, None].to(feat.dtype)
    return patches, mask
