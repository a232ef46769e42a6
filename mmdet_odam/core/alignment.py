"""Map feature-level heat maps back to image pixels.

Convention (mmdet's priors): cell ``j`` of a level with stride ``s`` covers
pixels ``[j*s, (j+1)*s)`` of the padded network input, its centre is at
``(j + 0.5) * s``. A pixel is sampled at its centre, bilinearly, clamped at
the map border. The original image maps to the top-left ``img_shape``
region of the padded input through the resize factor, so padding and resize
are undone in one exact sampling step (no intermediate resize).
"""
import functools
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F  # noqa: F401
from torch import Tensor


def _pair(v) -> Tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    return float(v[0]), float(v[1])


def interp_matrix(n_out: int, n_in: int, stride: float, pixel: float,
                  device=None, dtype=torch.float32) -> Tensor:
    """(n_out, n_in) bilinear weights sampling a level axis at pixel centres.

    Output pixel ``i`` has its centre at input coordinate
    ``(i + 0.5) * pixel``, i.e. level coordinate ``u = (i + 0.5) * pixel /
    stride - 0.5`` (cell centres at integers), clamped to ``[0, n_in - 1]``
    (same as ``grid_sample(..., padding_mode='border',
    align_corners=False)``).
    """
    u = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * \
        pixel / stride - 0.5
    u = u.clamp(0, n_in - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = u - i0
    m = torch.zeros(n_out, n_in, device=device, dtype=torch.float64)
    ar = torch.arange(n_out, device=device)
    m.index_put_((ar, i0), 1 - w1, accumulate=True)
    m.index_put_((ar, i1), w1, accumulate=True)
    return m.to(dtype)


def sample_level_maps(maps: Tensor, stride, out_size: Sequence[int],
                      pixel_scale) -> Tensor:
    """Sample level maps on an output pixel grid (separable bilinear).

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
    my = interp_matrix(ho, h, sty, py, maps.device, maps.dtype)
    mx = interp_matrix(wo, w, stx, px, maps.device, maps.dtype)
    if n == 0:
        return maps.new_zeros(0, ho, wo)
    return torch.matmul(torch.matmul(my, maps), mx.t())


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


def render_local(pieces, n: int, out_size: Sequence[int], pixel_scale,
                 normalize: bool = False, eps: float = 1e-12) -> Tensor:
    """Render level-map pieces into ``n`` maps, touching only each map's
    support (the output pixels whose bilinear sample reaches a nonzero cell).

    Same values as summing :func:`sample_level_maps` of every piece (and
    then :func:`~mmdet_odam.core.minmax_normalize` when ``normalize``), at a
    fraction of the cost for local (patch) maps.

    Args:
        pieces (list): ``(rows (m,), stride, level maps (m, h, w))``; several
            pieces may add to the same row.
        n (int): number of output maps.
        out_size (tuple): (H, W).
        pixel_scale (tuple): (sy, sx) input pixels per output pixel.
        normalize (bool): min-max normalise every map to [0, 1].

    Returns:
        Tensor: (n, H, W).
    """
    ho, wo = int(out_size[0]), int(out_size[1])
    py, px = _pair(pixel_scale)
    dtype = pieces[0][2].dtype if pieces else torch.float32
    dev = pieces[0][2].device if pieces else None
    out = torch.zeros(n, ho, wo, dtype=dtype, device=dev)
    win = [None] * n  # (i0, i1, j0, j1) union of touched pixels per row
    for rows, stride, maps in pieces:
        maps = maps.detach()
        h, w = maps.shape[-2:]
        sty, stx = _pair(stride)
        my = interp_matrix(ho, h, sty, py, maps.device, maps.dtype)
        mx = interp_matrix(wo, w, stx, px, maps.device, maps.dtype)
        ny, nx = my != 0, mx != 0
        nz = maps != 0
        ry, rx = nz.any(2), nz.any(1)
        for k in ry.any(1).nonzero().flatten().tolist():
            ys = ry[k].nonzero().flatten()
            xs = rx[k].nonzero().flatten()
            y0, y1 = int(ys[0]), int(ys[-1]) + 1
            x0, x1 = int(xs[0]), int(xs[-1]) + 1
            pi = ny[:, y0:y1].any(1).nonzero().flatten()
            pj = nx[:, x0:x1].any(1).nonzero().flatten()
            if len(pi) == 0 or len(pj) == 0:
                continue  # support only in the padding
            i0, i1 = int(pi[0]), int(pi[-1]) + 1
            j0, j1 = int(pj[0]), int(pj[-1]) + 1
            block = my[i0:i1, y0:y1] @ maps[k, y0:y1, x0:x1] @ \
                mx[j0:j1, x0:x1].t()
            r = int(rows[k])
            out[r, i0:i1, j0:j1] += block
            wb = win[r]
            win[r] = (i0, i1, j0, j1) if wb is None else (
                min(wb[0], i0), max(wb[1], i1), min(wb[2], j0),
                max(wb[3], j1))
    if not normalize:
        return out
    for r in range(n):
        if win[r] is None:
            continue  # all-zero map stays zero
        i0, i1, j0, j1 = win[r]
        v = out[r, i0:i1, j0:j1]
        lo, hi = v.min(), v.max()
        full = (i0, i1, j0, j1) == (0, ho, 0, wo)
        if not full:
            lo, hi = torch.clamp(lo, max=0), torch.clamp(hi, min=0)
        rng = hi - lo
        if not bool(rng > eps):
            out[r].zero_()
            continue
        v = (v - lo) / rng
        if not full and bool(lo != 0):
            out[r].fill_(float((0 - lo) / rng))
        out[r, i0:i1, j0:j1] = v
    return out


@functools.lru_cache(maxsize=16)
def _level_interp_matrices(level_shapes, strides, out_size, pixel_scale,
                           r, device, dtype):
    """:func:`interp_matrix` of every level, zero-padded by ``r`` columns on
    both sides and concatenated: (H_o, sum(h_l + 2r)), (W_o, sum(w_l +
    2r)), and each level's first column in them. Cached: the same input
    size gives the same matrices."""
    (ho, wo), (py, px) = out_size, pixel_scale
    mys, mxs, offs_y, offs_x = [], [], [0], [0]
    for (h, w), (sty, stx) in zip(level_shapes, strides):
        mys.append(F.pad(interp_matrix(ho, h, sty, py, device, dtype),
                         (r, r)))
        mxs.append(F.pad(interp_matrix(wo, w, stx, px, device, dtype),
                         (r, r)))
        offs_y.append(offs_y[-1] + mys[-1].shape[1])
        offs_x.append(offs_x[-1] + mxs[-1].shape[1])
    return (torch.cat(mys, 1), torch.cat(mxs, 1),
            torch.as_tensor(offs_y[:-1], device=device),
            torch.as_tensor(offs_x[:-1], device=device))


def render_patches(patches: Tensor, level_ids: Tensor, centers: Tensor,
                   level_shapes: Sequence[Sequence[int]], strides,
                   out_size: Sequence[int], pixel_scale) -> Tensor:
    """Render centred square patches of several levels in one batched pass.

    Equal to pasting each patch into a zero map of its level
    (:func:`paste_patches`) and sampling it with :func:`sample_level_maps`,
    without building the (N, h, w) level maps: each output is
    ``My[:, rows] @ patch @ Mx[:, cols]^T``.

    Args:
        patches (Tensor): (N, P, P), P = 2r+1, differentiable.
        level_ids (Tensor): (N,) level of each patch.
        centers (Tensor): (N, 2) long (y, x) centre cell on its level.
        level_shapes (list): (h_l, w_l) per level.
        strides (list): (sy, sx) per level, in input pixels.
        out_size (tuple): (H_o, W_o).
        pixel_scale (tuple): (sy, sx) input pixels per output pixel.

    Returns:
        Tensor: (N, H_o, W_o).
    """
    n, p, _ = patches.shape
    ho, wo = int(out_size[0]), int(out_size[1])
    if n == 0:
        return patches.new_zeros(0, ho, wo)
    r = (p - 1) // 2
    my, mx, offs_y, offs_x = _level_interp_matrices(
        tuple((int(h), int(w)) for h, w in level_shapes),
        tuple(_pair(s) for s in strides), (ho, wo), _pair(pixel_scale), r,
        patches.device, patches.dtype)
    ar = torch.arange(p, device=patches.device)
    oy, ox = offs_y[level_ids], offs_x[level_ids]
    rows = (oy + centers[:, 0])[:, None] + ar  # (N, P) padded columns
    cols = (ox + centers[:, 1])[:, None] + ar
    ys = my[:, rows].permute(1, 0, 2)  # (N, H_o, P)
    xs = mx[:, cols].permute(1, 2, 0)  # (N, P, W_o)
    return torch.bmm(torch.bmm(ys, patches), xs)
