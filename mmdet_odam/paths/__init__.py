"""Gradient paths: how the gradients behind ODAM maps are computed (pure
torch, no mmdet)."""
from .level_autograd import level_groups, scalar_grads

__all__ = ['level_groups', 'scalar_grads']
