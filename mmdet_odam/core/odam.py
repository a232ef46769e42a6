"""ODAM heat maps from gradients and features (paper Eq. 1-2, App. A.5.6)."""
import torch
from torch import Tensor

GRAD_MODES = ('pos_relu', 'neg_relu', 'pos_norelu', 'abs')


def _mode_name(mode) -> str:
    name = str(getattr(mode, 'value', mode))
    if name not in GRAD_MODES:
        raise ValueError(f'Unknown grad_mode {mode!r}; valid names: '
                         f'{", ".join(GRAD_MODES)}')
    return name


def odam_raw(grad: Tensor, feat: Tensor) -> Tensor:
    """Pixel-weighted channel sum ``sum_k g_k * A_k``.

    Args:
        grad (Tensor): (N, C, H, W) (smoothed) gradient maps.
        feat (Tensor): (N, C, H, W) or broadcastable features.

    Returns:
        Tensor: (N, H, W) signed raw map.
    """
    return (grad * feat).sum(1)


def apply_grad_mode(raw: Tensor, grad_mode='pos_relu') -> Tensor:
    """Turn a raw signed map into a heat map (App. A.5.6).

    ``pos_relu``: ReLU(raw) (Eq. 2), ``neg_relu``: ReLU(-raw) (negative
    gradients), ``pos_norelu``: raw, ``abs``: |raw|.
    """
    mode = _mode_name(grad_mode)
    if mode == 'pos_relu':
        return torch.relu(raw)
    if mode == 'neg_relu':
        return torch.relu(-raw)
    if mode == 'abs':
        return raw.abs()
    return raw


def odam_map(grad: Tensor, feat: Tensor, grad_mode='pos_relu') -> Tensor:
    """H = f(sum_k g_k * A_k) with f given by ``grad_mode``; (N, H, W)."""
    return apply_grad_mode(odam_raw(grad, feat), grad_mode)
