"""Pure tensor functions of ODAM (no mmdet imports)."""
from .alignment import (gather_patches, interp_matrix, level_to_image,
                        level_to_padded, paste_patches, render_local,
                        render_patches,
                        sample_level_maps)
from .candidates import Candidates, level_groups
from .boxes import (box_iou, box_wh_in_cells, check_boxes, match_boxes,
                    top_scoring)
from .grads import (as_leaves, row_grads, singular_nodes_zeroed,
                    tokens_as_level_leaves, zero_nan_at_singular_nodes)
from .local_grads import CroppedLevel, NotLocal, receptive_radius
from .normalize import minmax_normalize
from .owned_grads import OwnedGrads, split_by_owner
from .staged_grads import group_tensors, only_through, staged_row_grads
from .odam import GRAD_MODES, apply_grad_mode, odam_map, odam_raw
from .smoothing import (box_sigmas, gaussian_kernels1d, gaussian_smooth,
                        kernel_radius, max_kernel_radius)

__all__ = [
    'Candidates', 'level_groups', 'box_iou', 'box_wh_in_cells', 'check_boxes', 'match_boxes',
    'top_scoring', 'as_leaves', 'row_grads', 'tokens_as_level_leaves',
    'zero_nan_at_singular_nodes', 'singular_nodes_zeroed', 'only_through',
    'staged_row_grads', 'group_tensors', 'OwnedGrads', 'split_by_owner',
    'CroppedLevel', 'NotLocal', 'receptive_radius',
    'gather_patches', 'interp_matrix', 'render_local', 'level_to_image',
    'level_to_padded', 'paste_patches', 'render_patches',
    'sample_level_maps', 'minmax_normalize', 'GRAD_MODES', 'apply_grad_mode',
    'odam_map', 'odam_raw', 'box_sigmas', 'gaussian_kernels1d',
    'gaussian_smooth', 'kernel_radius', 'max_kernel_radius'
]
