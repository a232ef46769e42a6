"""Localisation metrics of explanation maps as an mmengine metric."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmdet.registry import METRICS
from ...core import minmax_normalize
from ..functional import localisation_metrics, match_well_detected

_KEYS = ('pg_box', 'enpg_box', 'compactness', 'odi_box', 'pg_mask',
         'enpg_mask', 'odi_mask', 'vea_auc')


def _tensor(x):
    return getattr(x, 'tensor', x)


@METRICS.register_module()
class ExplanationMetric(BaseMetric):
    """Pointing games, compactness, ODI and VEA of the maps carried by the
    predictions (paper Sec. 4.2, Tab. 3a and 4), for the best-matching
    detection of each well-detected GT object.

    Each data sample needs ``pred_instances`` with ``bboxes``, ``labels`` and
    a (K, h, w) map field ``map_key`` (resized to ``ori_shape`` and min-max
    normalised here if needed), and ``gt_instances`` with ``bboxes``,
    ``labels`` and optionally ``masks`` in original-image pixels. Without
    masks the mask metrics are skipped (logged once). Deletion / insertion
    need the model: use ``tools/analysis_tools/eval_explanations.py``.

    Args:
        map_key (str): field of ``pred_instances`` holding the maps.
        iou_thr (float): well-detected if IoU > this (paper: 0.9).
    """
    default_prefix: Optional[str] = 'expl'

    def __init__(self, map_key: str = 'odam_maps', iou_thr: float = 0.9,
                 collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not 0.0 <= float(iou_thr) < 1.0:
            raise ValueError(f'iou_thr must be in [0, 1), got {iou_thr}')
        self.map_key, self.iou_thr = map_key, float(iou_thr)
        self._warned = False

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            pred, gt = ds['pred_instances'], ds.get('gt_instances', {})
            if self.map_key not in pred:
                raise KeyError(
                    f'pred_instances has no {self.map_key!r} maps (keys: '
                    f'{sorted(pred.keys())}); explain the detections first '
                    f'or set map_key')
            h, w = (int(v) for v in ds['ori_shape'][:2])
            maps = torch.as_tensor(pred[self.map_key]).float().cpu()
            if maps.numel() and tuple(maps.shape[-2:]) != (h, w):
                maps = F.interpolate(maps[None], size=(h, w),
                                     mode='bilinear', align_corners=False)[0]
            maps = minmax_normalize(maps.clamp(min=0))
            gt_boxes = _tensor(gt.get('bboxes', torch.zeros(0, 4)))
            gt_boxes = torch.as_tensor(gt_boxes).float().cpu().reshape(-1, 4)
            masks = gt.get('masks', None)
            if masks is not None and len(gt_boxes):
                masks = masks.to_ndarray() if hasattr(
                    masks, 'to_ndarray') else np.asarray(masks)
                masks = torch.from_numpy(np.asarray(masks)).bool()
                if tuple(masks.shape[-2:]) != (h, w):
                    raise ValueError(
                        f'GT masks of shape {tuple(masks.shape[-2:])} do not '
                        f'match ori_shape {(h, w)}')
            elif masks is None and not self._warned:
                print_log('ExplanationMetric: no GT masks, mask metrics '
                          'skipped', logger='current')
                self._warned = True
            p, g = match_well_detected(
                _tensor(pred['bboxes']).cpu(), pred['labels'].cpu(),
                gt_boxes, torch.as_tensor(gt.get('labels', [])).cpu(),
                self.iou_thr)
            # one entry per sample (mmengine truncates results to the
            # number of samples): the list of its objects' metrics
            self.results.append([
                localisation_metrics(maps[pi], gt_boxes, gi,
                                     masks if masks is not None and
                                     len(masks) else None)
                for pi, gi in zip(p.tolist(), g.tolist())
            ])

    def compute_metrics(self, results: List[list]) -> Dict[str, float]:
        results = [r for per_img in results for r in per_img]
        out = dict(n_objects=float(len(results)))
        for k in _KEYS:
            vals = [r[k] for r in results if r.get(k) is not None]
            if vals:
                out[k] = float(np.mean(vals))
        return out
