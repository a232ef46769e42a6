"""Odam-NMS: duplicate removal using ODAM heat-map correlations."""
from .odam_nms import (ODAM_NMS_CFG_KEYS, CorrType, OdamNMS, batched_odam_nms,
                       check_odam_nms_cfg, check_test_cfg_nms,
                       map_correlation, nms_map_size, normalize_maps,
                       observe_odam_nms, odam_nms, pairwise_iou)

__all__ = [
    'CorrType', 'OdamNMS', 'odam_nms', 'batched_odam_nms',
    'check_odam_nms_cfg', 'nms_map_size', 'map_correlation',
    'normalize_maps', 'pairwise_iou', 'ODAM_NMS_CFG_KEYS',
    'observe_odam_nms', 'check_test_cfg_nms'
]
