"""Gaussian smoothing Phi of gradient maps (paper Eq. 2).

Rule (the paper leaves it open): for a detection whose box measures
``w_l x h_l`` cells on the explained feature map,
``sigma = 0.1 * sqrt(w_l * h_l)`` cells, clamped to ``[0, max_sigma]``
(``max_sigma = 2``); the kernel is ``2 * ceil(2 * sigma) + 1`` taps
(truncated at 2 sigma, renormalised to sum 1) and the smoothing is the
identity when ``sigma < 0.5``. The map is zero-padded at its border.
"""
import functools
import math
from typing import Optional, Sequence, Tuple

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
    return torch.where(sigma < MIN_SIGMA, 0.0, sigma)


def kernel_radius(sigma: float) -> int:
    """Half width of the kernel: ``ceil(2 sigma)``, 0 when sigma < 0.5."""
    sigma = float(sigma)
    return 0 if sigma < MIN_SIGMA else int(math.ceil(2 * sigma))


def gaussian_kernels1d(sigmas: Tensor, radius: Optional[int] = None
                       ) -> Tensor:
    """(N, 2r+1) normalised 1-D kernels, zero-padded to radius r.

    r is the widest kernel's radius, or ``radius`` when given (no host
    sync; must be at least the widest, e.g. ``max_kernel_radius`` of the
    largest sigma). A sigma below 0.5 gives the identity kernel (a single 1
    at the centre).
    """
    sig = sigmas.detach().float().reshape(-1)
    radii = torch.where(sig < MIN_SIGMA, 0.0, torch.ceil(2 * sig))
    if radius is not None:
        r = int(radius)
    else:
        r = int(radii.max()) if len(sig) else 0
    x2, xa = _taps(r, sig.device)
    k = torch.exp(x2 * sig.clamp(min=MIN_SIGMA).pow(-2).mul(-0.5)[:, None])
    # outside the radius and, for sigma < 0.5, everywhere but the centre
    k = k * (xa <= radii[:, None])
    return k / k.sum(1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _taps(r: int, device) -> Tuple[Tensor, Tensor]:
    """(1, 2r+1) squared and absolute tap offsets -r..r (cached)."""
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=device)[None]
    return x * x, x.abs()


def band_matrices(kernels: Tensor, n_out: int, n_in: int,
                  offset: int = 0) -> Tensor:
    """(N, n_out, n_in) matrices of a zero-padded 1-D convolution.

    Row ``i`` of sample ``n`` holds ``kernels[n]`` centred on input column
    ``i - offset`` (``offset``: zero padding before the input), so
    ``B @ x`` smooths ``x`` (n_in long) onto ``n_out`` positions.
    """
    n, kk = kernels.shape
    idx = _band_index(kk, int(n_out), int(n_in), int(offset), kernels.device)
    # column kk of the padded kernels is the zero outside the band
    return F.pad(kernels, (0, 1))[:, idx]


@functools.lru_cache(maxsize=32)
def _band_index(kk: int, n_out: int, n_in: int, offset: int,
                device) -> Tensor:
    """(n_out, n_in) kernel tap of each band-matrix entry, ``kk`` outside
    the band (cached: the same window sizes recur)."""
    r = (kk - 1) // 2
    d = (torch.arange(n_in, device=device)[None] + offset -
         torch.arange(n_out, device=device)[:, None]) + r
    return torch.where((d >= 0) & (d < kk), d, kk)


def gaussian_smooth(x: Tensor, sigmas: Tensor, pad: int = 0) -> Tensor:
    """Separable Gaussian blur with one sigma per sample (zero padding).

    Args:
        x (Tensor): (N, C, H, W) gradient maps.
        sigmas (Tensor): (N,) sigma in cells (see :func:`box_sigmas`).
        pad (int): zero border added first (output (H + 2p, W + 2p)), as
            ``gaussian_smooth(F.pad(x, (pad,) * 4), sigmas)`` without
            building the padded input.

    Returns:
        Tensor: (N, C, H + 2 pad, W + 2 pad), differentiable w.r.t. ``x``.
    """
    n, c, h, w = x.shape
    if n == 0 or not bool((sigmas >= MIN_SIGMA).any()):
        return F.pad(x, (pad, ) * 4) if pad else x
    k = gaussian_kernels1d(sigmas).to(x)  # (N, K)
    if max(h, w) + 2 * pad <= 64:  # small windows: two batched matmuls
        by = band_matrices(k, h + 2 * pad, h, pad)
        bx = band_matrices(k, w + 2 * pad, w, pad)
        return torch.matmul(torch.matmul(by[:, None], x),
                            bx.transpose(1, 2)[:, None])
    x = F.pad(x, (pad, ) * 4) if pad else x
    h, w = h + 2 * pad, w + 2 * pad
    r = (k.shape[1] - 1) // 2
    wk = k.repeat_interleave(c, dim=0)  # (N*C, K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(y, wk[:, None, :, None], padding=(r, 0), groups=n * c)
    y = F.conv2d(y, wk[:, None, None, :], padding=(0, r), groups=n * c)
    return y.reshape(n, c, h, w)


def max_kernel_radius(sigmas: Sequence[float]) -> int:
    """Largest kernel radius over ``sigmas``."""
    return max([kernel_radius(s) for s in list(sigmas)] + [0])
