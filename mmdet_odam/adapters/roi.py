"""Two-stage (RoI) adapter: which mmdet two-stage detectors the batched
RoIAlign-adjoint explainer mirrors, probed by behaviour.

The two-stage explainer re-implements ``StandardRoIHead.predict_bbox`` (to
keep each detection's RoI index), runs ``_bbox_forward`` and the bbox head's
forward on RoI features, and back-projects RoI gradients with mmcv's RoIAlign
backward. It accepts a detector only when those methods are the base
classes' own (cascades, Sparse R-CNN, Grid R-CNN... are declined with the
reasons and take the exact generic path).
"""
from torch import nn

from .support import Support, override_reasons

__all__ = ['probe_two_stage_detector', 'check_roi_head']

ROI_HEAD_MIRRORED = ('predict', 'predict_bbox', '_bbox_forward')
BBOX_HEAD_MIRRORED = ('predict_by_feat', '_predict_by_feat_single')
DETECTOR_MIRRORED = ('predict', 'extract_feat')


def probe_two_stage_detector(model: nn.Module) -> Support:
    """Whether the batched two-stage explainer mirrors ``model`` exactly;
    the reasons name what differs."""
    from mmdet.models.detectors import TwoStageDetector
    from mmdet.models.roi_heads import StandardRoIHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    if not isinstance(model, TwoStageDetector):
        return Support.no(f'{type(model).__name__} is not a two-stage '
                          'detector')
    reasons = override_reasons(model, TwoStageDetector, DETECTOR_MIRRORED)
    roi_head = getattr(model, 'roi_head', None)
    if not isinstance(roi_head, StandardRoIHead):
        return Support.no(*reasons, f'{type(roi_head).__name__} is not a '
                          'StandardRoIHead')
    reasons += override_reasons(roi_head, StandardRoIHead, ROI_HEAD_MIRRORED)
    bbox_head = getattr(roi_head, 'bbox_head', None)
    if not isinstance(bbox_head, BBoxHead):
        reasons.append(f'{type(bbox_head).__name__} is not a BBoxHead')
    else:
        reasons += override_reasons(bbox_head, BBoxHead, BBOX_HEAD_MIRRORED)
    try:
        check_roi_head(roi_head)
    except ValueError as e:
        reasons.append(str(e))
    return Support.from_reasons(reasons)


def check_roi_head(roi_head: nn.Module) -> None:
    """Raise ``ValueError`` if ``roi_head`` is not supported by the batched
    two-stage path (single-stage bbox head on mmcv ``RoIAlign`` layers)."""
    name = type(roi_head).__name__
    if not hasattr(roi_head, 'bbox_roi_extractor') or \
            not hasattr(roi_head, 'bbox_head') or \
            isinstance(roi_head.bbox_head, nn.ModuleList):
        raise ValueError(
            f'{name} is not supported by the batched two-stage explainer '
            '(needs a StandardRoIHead-like head with one bbox_head, e.g. '
            'Faster R-CNN); the exact generic path applies (cascade '
            'heads, ...)')
    from mmcv.ops import RoIAlign
    ext = roi_head.bbox_roi_extractor
    if not hasattr(ext, 'map_roi_levels') or not hasattr(ext, 'roi_layers'):
        raise ValueError(
            f'RoI extractor {type(ext).__name__} is not supported (needs '
            'SingleRoIExtractor); the exact generic path applies')
    for layer in ext.roi_layers:
        if not isinstance(layer, RoIAlign) or layer.pool_mode != 'avg' or \
                getattr(layer, 'use_torchvision', False):
            raise ValueError(
                'The batched two-stage explainer needs mmcv RoIAlign layers '
                f"with pool_mode='avg' (linear in the feature), got "
                f'{layer!r}; the exact generic path applies')
    if getattr(roi_head.bbox_head, 'custom_cls_channels', False):
        raise ValueError('bbox heads with a custom class activation are not '
                         'supported; the exact generic path applies')
