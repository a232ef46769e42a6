"""Gaussian smoothing Phi of gradient maps (paper Eq. 2).

Rule (the paper leaves it open): for a detection whose box measures
``w_l x h_l`` cells on the explained feature map,
``sigma = 0.1 * sqrt(w_l * h_l)`` cells, clamped to ``[0, max_sigma]``
(``max_sigma = 2``); the kernel is ``2 * ceil(2 * sigma) + 1`` taps
(truncated at 2 sigma, renormalised to sum 1) and the smoothing is the
identity when ``sigma < 0.5``. The map is zero-padded at its border.
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

SIGMA_FACTOR = 0.1
MAX_SIGMA = 2.0
MIN_SIGMA = 0.5


def box_sigmas(box_wh: Tensor, factor: float = SIGMA_FACTOR,
               max_sigma: float = MAX_SIGMA) -> Tensor:
    """Gaussian sigma per box from its size on the feature map.

    Args:
        box_wh (Tensor): (N, 2) box width and height in cells of the map.

    Returns:
        Tensor: (N,) sigma in cells; 0 for boxes whose sigma < 0.5.
    """
    wh = box_wh.detach().float().clamp(min=0)
    sigma = (factor * (wh[:, 0] * wh[:, 1]).sqrt()).clamp(0, max_sigma)
    return torch.where(sigma < MIN_SIGMA, torch.zeros_like(sigma), sigma)


def kernel_radius(sigma: float) -> int:
    """Half width of the kernel: ``ceil(2 sigma)``, 0 when sigma < 0.5."""
    sigma = float(sigma)
    return 0 if sigma < MIN_SIGMA else int(math.ceil(2 * sigma))


def gaussian_kernels1d(sigmas: Tensor) -> Tensor:
    """(N, 2r+1) normalised 1-D kernels, zero-padded to the widest radius r.

    A sigma below 0.5 gives the identity kernel (a single 1 at the centre).
    """
    sigmas = sigmas.detach().float().reshape(-1)
    r = max([kernel_radius(s) for s in sigmas.tolist()] + [0])
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=sigmas.device)
    out = torch.zeros(len(sigmas), 2 * r + 1, device=sigmas.device)
    for i, s in enumerate(sigmas.tolist()):
        ri = kernel_radius(s)
        if ri == 0:
            out[i, r] = 1.0
            continue
        k = torch.exp(-0.5 * (x / s)**2)
        k[(x.abs() > ri)] = 0
        out[i] = k / k.sum()
    return out


def gaussian_smooth(x: Tensor, sigmas: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma per sample (zero padding).

    Args:
        x (Tensor): (N, C, H, W) gradient maps.
        sigmas (Tensor): (N,) sigma in cells (see :func:`box_sigmas`).

    Returns:
        Tensor: (N, C, H, W), differentiable w.r.t. ``x``.
    """
    n, c, h, w = x.shape
    if n == 0 or not bool((sigmas >= MIN_SIGMA).any()):
        return x
    k = gaussian_kernels1d(sigmas).to(x)  # (N, K)
    r = (k.shape[1] - 1) // 2
    wk = k.repeat_interleave(c, dim=0)  # (N*C, K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(y, wk[:, None, :, None], padding=(r, 0), groups=n * c)
    y = F.conv2d(y, wk[:, None, None, :], padding=(0, r), groups=n * c)
    return y.reshape(n, c, h, w)


def max_kernel_radius(sigmas: Sequence[float]) -> int:
    """Largest kernel radius over ``sigmas``."""
    return max([kernel_radius(s) for s in list(sigmas)] + [0])
