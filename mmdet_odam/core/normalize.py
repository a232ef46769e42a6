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
    lo, hi = torch.aminmax(flat, dim=1, keepdim=True)
    rng = hi - lo
    out = flat - lo
    out.div_(rng.clamp(min=eps)).mul_((rng > eps).to(out.dtype))
    return out.reshape(maps.shape)
