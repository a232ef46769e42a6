"""Pure metric functions on heat maps (paper Sec. 4.2, App. A.5.1).

All take one (H, W) map >= 0 (values in [0, 1] after normalisation) and GT
boxes (xyxy pixels) or bool masks on the same grid.
"""
from .compactness import compactness
from .deletion import PerturbMode, perturbation_curve, resize_map
from .matching import box_iou, match_well_detected, tracked_score
from .odi import odi, odi_box
from .pointing_game import (energy_in_region, energy_pointing_game_box,
                            max_point, pointing_game, pointing_game_box)
from .regions import box_to_mask, boxes_to_masks
from .similarity import map_pearson, map_spearman
from .summary import localisation_metrics, markdown_tables, summarize
from .vea import VEA_THRESHOLDS, curve_auc, vea_auc, vea_curve

__all__ = [
    'compactness', 'PerturbMode', 'perturbation_curve', 'resize_map',
    'box_iou', 'match_well_detected', 'tracked_score', 'odi', 'odi_box',
    'energy_in_region', 'energy_pointing_game_box', 'max_point',
    'pointing_game', 'pointing_game_box', 'box_to_mask', 'boxes_to_masks',
    'map_pearson', 'map_spearman', 'localisation_metrics',
    'markdown_tables', 'summarize', 'VEA_THRESHOLDS', 'curve_auc', 'vea_auc',
    'vea_curve'
]
