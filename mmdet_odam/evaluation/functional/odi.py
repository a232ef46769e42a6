"""Object Discrimination Index (paper Sec. 4.2, Tab. 3a)."""
import torch
from torch import Tensor

from .regions import as_map, boxes_to_masks, is_constant


def odi(heat: Tensor, regions: Tensor, target: int,
        eps: float = 1e-10) -> float:
    """Share of the on-object energy that falls on *other* objects.

    ``sum(H * U_other) / (sum(H * U_all) + eps)``, with ``U_other`` the union
    of the regions of all objects but ``target`` and ``U_all`` the union of
    all regions (background ignored). Lower is better. A constant (e.g.
    all-zero) map is treated as uniform (area share). A map with no energy on
    any object gives 0 (the authors' formula).

    Args:
        heat (Tensor): (H, W) map >= 0.
        regions (Tensor): (N, H, W) bool masks of all objects of the image
            (GT masks, or :func:`boxes_to_masks`).
        target (int): index of the explained object in ``regions``.
    """
    heat = as_map(heat)
    regions = torch.as_tensor(regions).bool()
    if regions.dim() != 3 or tuple(regions.shape[1:]) != tuple(heat.shape):
        raise ValueError(f'regions must be (N, {heat.shape[0]}, '
                         f'{heat.shape[1]}), got {tuple(regions.shape)}')
    if not 0 <= int(target) < len(regions):
        raise ValueError(f'target {target} out of range for '
                         f'{len(regions)} objects')
    if is_constant(heat):
        heat = torch.ones_like(heat)
    keep = torch.ones(len(regions), dtype=torch.bool)
    keep[int(target)] = False
    all_u = regions.any(0)
    other_u = regions[keep].any(0) if keep.any() else torch.zeros_like(all_u)
    return float((heat * other_u).sum() / ((heat * all_u).sum() + eps))


def odi_box(heat: Tensor, boxes, target: int) -> float:
    """:func:`odi` with xyxy GT boxes (N, 4) rasterised on the map grid."""
    heat = as_map(heat)
    return odi(heat, boxes_to_masks(boxes, heat.shape), target)
