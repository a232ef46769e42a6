"""Binary regions (boxes, masks) rasterised on a heat-map grid."""
import math
from typing import Tuple

import torch
from torch import Tensor


def box_to_mask(box, shape: Tuple[int, int]) -> Tensor:
    """Rasterise one xyxy box (pixels) into a bool (H, W) mask.

    Rows ``[floor(y1), ceil(y2))`` and columns ``[floor(x1), ceil(x2))``,
    clipped to the image (a box partly outside the image keeps its inside
    part; a box fully outside gives an empty mask). Same rule as the authors'
    ``eval_pointgame.py``.
    """
    h, w = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = [float(v) for v in box]
    c0, c1 = max(0, math.floor(x1)), min(w, math.ceil(x2))
    r0, r1 = max(0, math.floor(y1)), min(h, math.ceil(y2))
    out = torch.zeros(h, w, dtype=torch.bool)
    if c1 > c0 and r1 > r0:
        out[r0:r1, c0:c1] = True
    return out


def boxes_to_masks(boxes, shape: Tuple[int, int]) -> Tensor:
    """(N, 4) xyxy boxes -> bool (N, H, W) masks (see :func:`box_to_mask`)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return torch.zeros(0, int(shape[0]), int(shape[1]), dtype=torch.bool)
    return torch.stack([box_to_mask(b, shape) for b in boxes])


def as_map(heat: Tensor) -> Tensor:
    """Check a heat map is (H, W), finite and >= 0; return it as float."""
    heat = torch.as_tensor(heat)
    if heat.dim() != 2:
        raise ValueError(f'heat map must be (H, W), got shape '
                         f'{tuple(heat.shape)}')
    heat = heat.detach().float()
    if not torch.isfinite(heat).all():
        raise ValueError('heat map holds NaN or inf values')
    if (heat < 0).any():
        raise ValueError('heat map must be >= 0 (normalised maps are in '
                         '[0, 1])')
    return heat


def as_region(region: Tensor, shape: Tuple[int, int]) -> Tensor:
    """Check a region is a (H, W) mask on the map grid; return it as bool."""
    region = torch.as_tensor(region)
    if tuple(region.shape) != tuple(shape):
        raise ValueError(f'region shape {tuple(region.shape)} differs from '
                         f'the heat map shape {tuple(shape)}')
    return region.bool()


def is_constant(heat: Tensor) -> bool:
    """True for a map without any ranking (all zero or constant)."""
    return heat.numel() == 0 or bool(heat.max() <= heat.min())
