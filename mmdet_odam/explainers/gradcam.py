"""Grad-CAM and Grad-CAM++ for detectors (paper Sec. 4.2 baselines).

They explain exactly the detections ODAM explains, with the same target
scalar and layer (the FPN level of each detection): only the gradient map is
replaced by one weight per channel before ``ReLU(sum_c w_c A_c)``
(authors' ``savefig_odam.py`` alternatives, code facts Sec. 1.3).
"""
import torch
from torch import Tensor

from .builder import EXPLAINERS
from .dense import DenseHeadExplainer


def gradcam_weights(grad: Tensor, feat: Tensor = None) -> Tensor:
    """Grad-CAM channel weights: the spatial mean of the gradient.

    Args:
        grad (Tensor): (N, C, H, W) gradients of the target w.r.t. ``feat``.

    Returns:
        Tensor: (N, C, 1, 1).
    """
    return grad.mean(dim=(-2, -1), keepdim=True)


def gradcampp_weights(grad: Tensor, feat: Tensor,
                      eps: float = 1e-7) -> Tensor:
    """Grad-CAM++ channel weights ``w_c = sum_ij ReLU(G) * alpha`` with
    ``alpha = G^2 / (2 G^2 + sum_ij(A) G^3)`` (0 where the denominator is 0).

    Args:
        grad (Tensor): (N, C, H, W) gradients.
        feat (Tensor): (N, C, H, W) features.

    Returns:
        Tensor: (N, C, 1, 1).
    """
    g2 = grad.pow(2)
    denom = 2 * g2 + feat.sum(dim=(-2, -1), keepdim=True) * grad.pow(3)
    alpha = torch.where(denom.abs() > eps, g2 / torch.where(
        denom.abs() > eps, denom, torch.ones_like(denom)),
                        torch.zeros_like(denom))
    return (torch.relu(grad) * alpha).sum(dim=(-2, -1), keepdim=True)


@EXPLAINERS.register_module(name='gradcam')
class GradCAMExplainer(DenseHeadExplainer):
    """Grad-CAM for single-stage detectors the dense adapter accepts
    (FCOS / RetinaNet / ATSS-like heads): ODAM's per-detection
    gradients (exact autograd), spatially averaged per channel. Smoothing of
    the gradient is off by default (it does not change a spatial mean)."""
    method = 'gradcam'
    grad_weights = staticmethod(gradcam_weights)

    def __init__(self, model, *args, smoothing='none', **kwargs):
        super().__init__(model, *args, smoothing=smoothing, **kwargs)


@EXPLAINERS.register_module(name='gradcampp')
class GradCAMPPExplainer(GradCAMExplainer):
    """Grad-CAM++ with the same gradients, target and layer as ODAM."""
    method = 'gradcampp'
    grad_weights = staticmethod(gradcampp_weights)
