"""Pure tensor functions of ODAM (no mmdet imports)."""
from .alignment import (gather_patches, interp_matrix, level_to_image,
                        level_to_padded, paste_patches, render_local,
                        sample_level_maps)
from .normalize import minmax_normalize
from .odam import GRAD_MODES, apply_grad_mode, odam_map, odam_raw
from .smoothing import (box_sigmas, gaussian_kernels1d, gaussian_smooth,
                        kernel_radius, max_kernel_radius)

__all__ = [
    'gather_patches', 'interp_matrix', 'render_local', 'level_to_image',
    'level_to_padded', 'paste_patches',
    'sample_level_maps', 'minmax_normalize', 'GRAD_MODES', 'apply_grad_mode',
    'odam_map', 'odam_raw', 'box_sigmas', 'gaussian_kernels1d',
    'gaussian_smooth', 'kernel_radius', 'max_kernel_radius'
]
