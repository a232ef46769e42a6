"""Gradient paths: how the gradients behind ODAM maps are computed (pure
torch, no mmdet)."""
from .deform_conv import deform_conv2d_torch, straight_through
from .gn_exact import (conv_radius, layer_record, level_tower_grads,
                       tower_costs, tower_supported)
from ..core.candidates import level_groups
from .level_autograd import scalar_grads

__all__ = [
    'conv_radius', 'deform_conv2d_torch', 'layer_record', 'level_groups',
    'level_tower_grads', 'scalar_grads', 'straight_through', 'tower_costs',
    'tower_supported'
]
