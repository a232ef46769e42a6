"""Visual Explanation Accuracy (paper Sec. 4.2, Fig. 5c, Tab. 1)."""
from typing import Sequence

import numpy as np
from torch import Tensor

from ...core import minmax_normalize
from .regions import as_map, as_region

#: Thresholds of the authors' eval_mask_IoU.py.
VEA_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def vea_curve(heat: Tensor, mask: Tensor,
              thresholds: Sequence[float] = VEA_THRESHOLDS) -> np.ndarray:
    """IoU between ``heat > t`` (map min-max normalised first) and the GT
    mask, for each threshold ``t``. An empty mask and an empty thresholded map
    give IoU 0 (not NaN).

    Returns:
        np.ndarray: (T,) IoUs.
    """
    heat = as_map(heat)
    mask = as_region(mask, heat.shape)
    heat = minmax_normalize(heat[None])[0]
    out = []
    for t in thresholds:
        binary = heat > float(t)
        union = (binary | mask).sum()
        inter = (binary & mask).sum()
        out.append(float(inter) / float(union) if union > 0 else 0.0)
    return np.asarray(out, dtype=np.float64)


def curve_auc(values: Sequence[float], xs: Sequence[float] = None) -> float:
    """Trapezoid area under ``values`` over ``xs`` (default: evenly spaced on
    [0, 1])."""
    values = np.asarray(values, dtype=np.float64)
    if xs is None:
        xs = np.linspace(0.0, 1.0, len(values))
    xs = np.asarray(xs, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(np.sum((values[1:] + values[:-1]) * np.diff(xs)) / 2.0)


def vea_auc(ious: Sequence[float],
            thresholds: Sequence[float] = VEA_THRESHOLDS) -> float:
    """Trapezoid area under the (mean) VEA curve over the threshold axis
    (0.1 ... 0.9), the scalar of Tab. 1 (the authors' code prints only the
    curve; this rule is our reading)."""
    return curve_auc(ious, thresholds)
