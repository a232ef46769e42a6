"""Pointing game, energy-based pointing game (paper Sec. 4.2, Tab. 4)."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .regions import as_map, as_region, box_to_mask, is_constant


def max_point(heat: Tensor) -> Optional[Tuple[int, int]]:
    """(row, col) of the maximum (first in row-major order on ties, as the
    authors' code); ``None`` for a constant (e.g. all-zero) map."""
    heat = as_map(heat)
    if is_constant(heat):
        return None
    idx = int(torch.argmax(heat.reshape(-1)))
    return idx // heat.shape[1], idx % heat.shape[1]


def pointing_game(heat: Tensor, region: Tensor) -> float:
    """1.0 if the maximum of ``heat`` (H, W) lies in the bool ``region``
    (H, W) (a GT mask or :func:`box_to_mask`), else 0.0. A constant map has no
    maximum and scores a miss."""
    heat = as_map(heat)
    region = as_region(region, heat.shape)
    pt = max_point(heat)
    return 0.0 if pt is None else float(region[pt[0], pt[1]])


def pointing_game_box(heat: Tensor, box, strict: bool = False) -> float:
    """Pointing game with an xyxy GT box (pixels).

    ``strict=False`` (default): hit if the maximum pixel lies in the
    rasterised box (:func:`box_to_mask`). ``strict=True``: the authors' rule
    ``x1 < col < x2 and y1 < row < y2`` on pixel indices.
    """
    heat = as_map(heat)
    if not strict:
        return pointing_game(heat, box_to_mask(box, heat.shape))
    pt = max_point(heat)
    if pt is None:
        return 0.0
    x1, y1, x2, y2 = [float(v) for v in box]
    return float(x1 < pt[1] < x2 and y1 < pt[0] < y2)


def energy_in_region(heat: Tensor, region: Tensor, eps: float = 1e-10) -> float:
    """Energy-based pointing game: sum(H * R) / (sum(H) + eps).

    A constant map (also all zero) is treated as uniform: the result is the
    area fraction of the region (no ranking, no credit beyond chance).
    """
    heat = as_map(heat)
    region = as_region(region, heat.shape)
    if is_constant(heat):
        heat = torch.ones_like(heat)
    return float((heat * region).sum() / (heat.sum() + eps))


def energy_pointing_game_box(heat: Tensor, box) -> float:
    """:func:`energy_in_region` with the rasterised xyxy box."""
    heat = as_map(heat)
    return energy_in_region(heat, box_to_mask(box, heat.shape))
