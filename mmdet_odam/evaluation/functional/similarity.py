"""How similar two heat maps are (sanity check, paper App. A.5.1)."""
import numpy as np
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

from .regions import as_map


def _flat(heat: Tensor, max_side: int) -> np.ndarray:
    heat = as_map(heat)
    h, w = heat.shape
    s = max(h, w) / float(max_side)
    if s > 1:
        heat = F.adaptive_avg_pool2d(heat[None, None],
                                     (max(1, int(h / s)), max(1, int(w / s))))
    return heat.reshape(-1).double().numpy()


def map_pearson(a: Tensor, b: Tensor, max_side: int = 64) -> float:
    """Pearson correlation of two maps (area-downsampled to ``max_side``);
    0 if either map is constant."""
    x, y = _flat(a, max_side), _flat(b, max_side)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def map_spearman(a: Tensor, b: Tensor, max_side: int = 64) -> float:
    """Spearman rank correlation of two maps (ties averaged; downsampled to
    ``max_side``); 0 if either map is constant."""
    x, y = _flat(a, max_side), _flat(b, max_side)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(spearmanr(x, y)[0])
