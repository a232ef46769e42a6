"""Gradient paths: how the gradients behind ODAM maps are computed (pure
torch, no mmdet)."""
from .gn_exact import (conv_radius, level_tower_grads, tower_costs,
                       tower_supported)
from .level_autograd import level_groups, scalar_grads

__all__ = [
    'conv_radius', 'level_groups', 'level_tower_grads', 'scalar_grads',
    'tower_costs', 'tower_supported'
]
