"""Heat-map compactness (paper Sec. 4.2, Tab. 4)."""
import torch
from torch import Tensor

from .pointing_game import max_point
from .regions import as_map


def compactness(heat: Tensor, box, eps: float = 1e-10) -> float:
    """Weighted spread of the map around its maximum, relative to the box.

    ``sqrt( sum_x S_x ||x - x_hat||^2 / ((w^2 + h^2) / 4) / sum_x S_x )``
    with ``x_hat`` the maximum point and (w, h) the GT box size (pixels).
    Lower is more compact. A constant (e.g. all-zero) map is treated as
    uniform with ``x_hat`` at the image centre.

    Args:
        heat (Tensor): (H, W) map >= 0.
        box: xyxy GT box in the map's pixels.
    """
    heat = as_map(heat)
    h, w = heat.shape
    pt = max_point(heat)
    if pt is None:
        heat = torch.ones_like(heat)
        pt = ((h - 1) / 2.0, (w - 1) / 2.0)
    bw = max(float(box[2]) - float(box[0]), 0.0)
    bh = max(float(box[3]) - float(box[1]), 0.0)
    scale = max((bw**2 + bh**2) / 4.0, 1.0)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    d2 = (ys - pt[0])**2 + (xs - pt[1])**2
    val = (heat * d2).sum() / (scale * (heat.sum() + eps))
    return float(torch.sqrt(val))
