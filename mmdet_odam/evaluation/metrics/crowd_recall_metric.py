# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Recall on the "crowd" and "sparse" ground-truth sets (paper App. A.4.2).

Ground truths that overlap another (valid) ground truth of the same image with
IoU > ``crowd_iou_thr`` (0.5) form the *crowd* set, the others the *sparse*
set (Chu et al. 2020). Recall is measured at the detection score threshold
that gives the best JI (Tab. 7), so methods are compared fairly.

JI follows CrowdDet / mmdet's :class:`CrowdHumanMetric` (code-facts §6.3):
for each score threshold ``t`` in {0.0, 0.1, ..., 0.9}, detections with
``score > t`` are matched one-to-one to valid GTs with IoU >= 0.5 (mmdet's
bipartite matching, reused here), unmatched detections / GTs inside ignore
regions (IoA > 0.5) are not counted, and
``JI_img = k / (m + n - k + 1e-6)``; JI = max over ``t`` of the mean over
images with ``n`` or ``m`` non-zero. A GT counts as recalled when it is
matched at the best-JI threshold.
"""
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import MMLogger, print_log

from mmdet.evaluation.functional.bbox_overlaps import bbox_overlaps
from mmdet.evaluation.metrics import CrowdHumanMetric
from mmdet.registry import METRICS


def crowd_gt_mask(gt_boxes: np.ndarray, iou_thr: float = 0.5) -> np.ndarray:
    """(M,) bool: GT boxes (M, 4) xyxy overlapping another with IoU > thr."""
    if gt_boxes.shape[0] < 2:
        return np.zeros(gt_boxes.shape[0], dtype=bool)
    ious = bbox_overlaps(gt_boxes[:, :4], gt_boxes[:, :4], mode='iou')
    np.fill_diagonal(ious, 0)
    return ious.max(axis=1) > iou_thr


@METRICS.register_module()
class CrowdRecallMetric(CrowdHumanMetric):
    """Crowd/sparse recall at the best-JI score threshold (full-body boxes).

    Args:
        ann_file (str): CrowdHuman ``.odgt`` annotation file (same order as
            the test dataset; ``shuffle=False``).
        crowd_iou_thr (float): GT-GT IoU above which a GT is "crowd".
            Defaults to 0.5.
        score_thrs (Sequence[float], optional): JI score thresholds.
            Defaults to 0.0, 0.1, ..., 0.9 (CrowdDet).
        iou_thres (float): detection-GT matching IoU. Defaults to 0.5.
        backend_args, collect_device, prefix: as in mmengine metrics.

    Returned keys (prefix ``crowd_recall/``): ``JI``, ``score_thr`` (the
    best-JI threshold), ``recall``, ``recall_sparse``, ``recall_crowd``,
    ``num_gt``, ``num_gt_sparse``, ``num_gt_crowd``.
    """
    default_prefix: Optional[str] = 'crowd_recall'

    def __init__(self,
                 ann_file: str,
                 crowd_iou_thr: float = 0.5,
                 score_thrs: Optional[Sequence[float]] = None,
                 iou_thres: float = 0.5,
                 backend_args: Optional[dict] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(
            ann_file=ann_file,
            metric=['JI'],
            backend_args=backend_args,
            collect_device=collect_device,
            prefix=prefix,
            eval_mode=0,
            iou_thres=iou_thres,
            num_ji_process=1)
        if not 0.0 <= float(crowd_iou_thr) <= 1.0:
            raise ValueError(
                f'crowd_iou_thr must be in [0, 1], got {crowd_iou_thr}')
        self.crowd_iou_thr = float(crowd_iou_thr)
        if score_thrs is None:
            score_thrs = [0.1 * i for i in range(10)]
        score_thrs = [float(t) for t in score_thrs]
        if not score_thrs:
            raise ValueError('score_thrs must not be empty')
        self.score_thrs = score_thrs

    def _image_ji(self, record, score_thr: float):
        """JI terms of one image and the indices of matched valid GTs."""
        gt_boxes = record.gt_boxes
        dt_boxes = record.dt_boxes
        dt_boxes = dt_boxes[dt_boxes[:, -1] > score_thr][:, :-1]
        gt_tag = np.array(gt_boxes[:, -1] != -1)
        valid = gt_boxes[gt_tag]
        ignore = gt_boxes[~gt_tag, :4]
        matches = self.compute_ji_matching(dt_boxes, valid[:, :4])
        dt_matched = {j for j, _ in matches}
        gt_matched = np.array(sorted(g for _, g in matches), dtype=np.int64)
        dt_un = [i for i in range(dt_boxes.shape[0]) if i not in dt_matched]
        gt_un = sorted(set(range(valid.shape[0])) - set(gt_matched.tolist()))
        n_ign_dt = self.get_ignores(dt_boxes[dt_un], ignore)
        n_ign_gt = self.get_ignores(valid[gt_un], ignore)
        k = len(matches)
        m = int(gt_tag.sum()) - n_ign_gt
        n = dt_boxes.shape[0] - n_ign_dt
        return k / (m + n - k + 1e-6), m, n, gt_matched

    def evaluate_samples(self, samples: Dict) -> Dict[str, float]:
        """Metrics from mmdet's per-image ``Image`` records."""
        crowd = {}
        for key, rec in samples.items():
            valid = rec.gt_boxes[rec.gt_boxes[:, -1] != -1]
            crowd[key] = crowd_gt_mask(valid[:, :4], self.crowd_iou_thr)
        per_thr = []
        for thr in self.score_thrs:
            ratios, matched, n_img = 0.0, {}, 0
            for key, rec in samples.items():
                ratio, m, n, gt_matched = self._image_ji(rec, thr)
                if n != 0 or m != 0:
                    n_img += 1
                ratios += ratio
                matched[key] = gt_matched
            per_thr.append((ratios / max(n_img, 1), matched))
        best = int(np.argmax([ji for ji, _ in per_thr]))
        ji, matched = per_thr[best]
        n_crowd = sum(int(c.sum()) for c in crowd.values())
        n_all = sum(int(c.size) for c in crowd.values())
        tp_crowd = sum(int(crowd[k][matched[k]].sum()) for k in crowd)
        tp_all = sum(int(matched[k].size) for k in crowd)
        n_sparse, tp_sparse = n_all - n_crowd, tp_all - tp_crowd

        def _ratio(a, b):
            return float(a / b) if b else float('nan')

        return OrderedDict(
            JI=float(ji),
            score_thr=float(self.score_thrs[best]),
            recall=_ratio(tp_all, n_all),
            recall_sparse=_ratio(tp_sparse, n_sparse),
            recall_crowd=_ratio(tp_crowd, n_crowd),
            # floats: mmengine's json log drops ints
            num_gt=float(n_all),
            num_gt_sparse=float(n_sparse),
            num_gt_crowd=float(n_crowd))

    def compute_metrics(self, results: List) -> Dict[str, float]:
        """Compute crowd/sparse recall from ``(ann, dets)`` results."""
        logger: MMLogger = MMLogger.get_current_instance()
        with tempfile.TemporaryDirectory() as tmp_dir:
            result_file = self.results2json(results,
                                            osp.join(tmp_dir, 'result'))
            samples = self.load_eval_samples(result_file)
        out = self.evaluate_samples(samples)
        print_log(
            'crowd/sparse recall at best-JI score threshold '
            f"{out['score_thr']:.1f} (JI {out['JI']:.4f}): "
            f"crowd {out['recall_crowd']:.4f} of {out['num_gt_crowd']}, "
            f"sparse {out['recall_sparse']:.4f} of {out['num_gt_sparse']}, "
            f"all {out['recall']:.4f} of {out['num_gt']}",
            logger=logger)
        return out
