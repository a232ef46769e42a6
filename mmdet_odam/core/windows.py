"""Per-row windows of level maps, and ODAM maps from them (pure torch).

The gradient of one detection w.r.t. a level of a local tower is zero
outside a window around the detection's position. Kept as that window
(``Windows``), smoothing, the channel sum with the features and the
finiteness check cost the window's size instead of the level's times the
channels; only the final one-channel map is pasted into the level.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .smoothing import gaussian_smooth, max_kernel_radius


def window_index(y0: Tensor, x0: Tensor, size: Sequence[int]):
    """(m, h, 1) rows and (m, 1, w) columns of each window."""
    iy = y0[:, None] + torch.arange(int(size[0]), device=y0.device)
    ix = x0[:, None] + torch.arange(int(size[1]), device=x0.device)
    return iy[:, :, None], ix[:, None, :]


def gather_windows(maps: Tensor, img: Tensor, y0: Tensor, x0: Tensor,
                   size: Sequence[int], rows: Optional[Tensor] = None
                   ) -> Tensor:
    """(m, C, h, w) windows of ``maps`` ((B, C, H, W); or (m, B, C, H, W)
    with ``rows``, row r's window taken from ``maps[rows[r]]``); the
    windows must lie inside the maps."""
    iy, ix = window_index(y0, x0, size)
    b = img[:, None, None]
    win = maps[b, :, iy, ix] if rows is None else \
        maps[rows[:, None, None], b, :, iy, ix]
    return win.permute(0, 3, 1, 2)


@dataclass
class Windows:
    """Row r of (m, B, C, H, W) gradients: ``values[r]`` (C, h, w) at image
    ``img[r]``, top-left cell (``y0[r]``, ``x0[r]``); zero elsewhere.

    Attributes:
        img, y0, x0 (Tensor): (m,) long.
        values (Tensor): (m, C, h, w).
        shape (tuple): (B, C, H, W) of the full maps.
        rows (Tensor, optional): (m,) positions of the rows among the
            caller's rows (default 0..m-1).
    """

    img: Tensor
    y0: Tensor
    x0: Tensor
    values: Tensor
    shape: Tuple[int, ...]
    rows: Optional[Tensor] = None

    def dense(self, n: int) -> Tensor:
        """(n, B, C, H, W) with the windows at :attr:`rows`."""
        return self.add_to(self.values.new_zeros(n, *self.shape))

    def add_to(self, out: Tensor) -> Tensor:
        """Add the windows into ``out`` ((n, B, C, H, W)) in place."""
        rows = self.rows if self.rows is not None else torch.arange(
            len(self.img), device=self.img.device)
        iy, ix = window_index(self.y0, self.x0, self.values.shape[-2:])
        # one window per row: no index repeats within the add
        out[rows[:, None, None], self.img[:, None, None], :, iy, ix] += \
            self.values.permute(0, 2, 3, 1).to(out.dtype)
        return out


def windowed_odam_raw(win: Windows, feat: Tensor,
                      sigmas: Optional[Tensor] = None) -> Tensor:
    """(m, H, W) raw ODAM maps ``sum_c Phi(g)_c * A_c`` of windowed
    gradients, equal to :func:`~mmdet_odam.core.odam_raw` of the smoothed
    dense gradients (the smoothing is zero-padded and linear, so the
    window grown by the kernel radius holds all of it).

    Args:
        win (Windows): gradients, ``shape`` (B, C, H, W).
        feat (Tensor): (B, C, H, W) features.
        sigmas (Tensor, optional): (m,) Gaussian sigma per row (no
            smoothing when None).
    """
    vals = win.values
    pad = 0
    if sigmas is not None:
        pad = max_kernel_radius(sigmas.tolist())
        vals = gaussian_smooth(vals, sigmas.to(vals.device), pad=pad)
    _, _, hh, ww = feat.shape
    iy, ix = window_index(win.y0 - pad, win.x0 - pad, vals.shape[-2:])
    inside = (iy >= 0) & (iy < hh) & (ix >= 0) & (ix < ww)  # (m, h, w)
    a = feat[win.img[:, None, None], :, iy.clamp(0, hh - 1),
             ix.clamp(0, ww - 1)]  # (m, h, w, C)
    raw = torch.einsum('mchw,mhwc->mhw', vals.to(a.dtype), a)
    m = len(win.img)
    out = raw.new_zeros(m, hh, ww)
    r = torch.arange(m, device=raw.device)[:, None, None].expand_as(inside)
    out[r[inside], iy.expand_as(inside)[inside],
        ix.expand_as(inside)[inside]] = raw[inside]
    return out
