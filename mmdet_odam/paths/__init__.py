"""Gradient paths: how the gradients behind ODAM maps are computed (pure
torch, no mmdet)."""
from .gn_exact import (conv_radius, layer_record, level_tower_grads,
                       tower_costs, tower_supported)
from ..core.candidates import level_groups
from .level_autograd import scalar_grads

__all__ = [
    'conv_radius', 'layer_record', 'level_groups', 'level_tower_grads',
    'scalar_grads', 'tower_costs', 'tower_supported'
]
