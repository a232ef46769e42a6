"""Which detections are explained, and which score a perturbed image keeps
(paper Sec. 4.2; authors' savefig_odam.py / eval_delet.py)."""
from typing import Tuple

import torch
from torch import Tensor

from mmdet_odam.core import box_iou

__all__ = ['box_iou', 'match_well_detected', 'tracked_score']


def match_well_detected(pred_bboxes: Tensor, pred_labels: Tensor,
                        gt_bboxes: Tensor, gt_labels: Tensor,
                        iou_thr: float = 0.9,
                        plus_one: bool = False) -> Tuple[Tensor, Tensor]:
    """Best-matching detection of each well-detected GT object.

    Greedy 1-to-1: repeatedly take the globally best (prediction, GT) pair of
    the same class; stop when its IoU is <= ``iou_thr``; remove its row and
    column (authors' ``savefig_odam.py``).

    Returns:
        tuple[Tensor, Tensor]: ``(pred_inds, gt_inds)`` (P,) each, in the
        order the pairs were taken (best IoU first).
    """
    if not 0.0 <= float(iou_thr) < 1.0:
        raise ValueError(f'iou_thr must be in [0, 1), got {iou_thr}')
    ious = box_iou(pred_bboxes, gt_bboxes, plus_one)
    same = (torch.as_tensor(pred_labels).reshape(-1, 1) ==
            torch.as_tensor(gt_labels).reshape(1, -1))
    ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    pred_inds, gt_inds = [], []
    for _ in range(min(ious.shape)):
        val, idx = ious.reshape(-1).max(0)
        if float(val) <= iou_thr:
            break
        p, g = int(idx) // ious.shape[1], int(idx) % ious.shape[1]
        pred_inds.append(p)
        gt_inds.append(g)
        ious[p, :] = -1.0
        ious[:, g] = -1.0
    return (torch.as_tensor(pred_inds, dtype=torch.long),
            torch.as_tensor(gt_inds, dtype=torch.long))


def tracked_score(pred_bboxes: Tensor, pred_scores: Tensor,
                  pred_labels: Tensor, ref_box, ref_label: int,
                  iou_thr: float = 0.5, plus_one: bool = False) -> float:
    """Score of the explained object in a (perturbed) image's predictions.

    Max score over predictions of class ``ref_label`` whose IoU with
    ``ref_box`` is > ``iou_thr``; 0 if there is none. ``ref_box`` is the
    explained detection's box (paper) or its GT box (authors' code).
    """
    if len(pred_bboxes) == 0:
        return 0.0
    ious = box_iou(pred_bboxes, torch.as_tensor(ref_box).reshape(1, 4),
                   plus_one)[:, 0]
    ok = (ious > iou_thr) & (torch.as_tensor(pred_labels).reshape(-1) ==
                             int(ref_label))
    if not ok.any():
        return 0.0
    return float(torch.as_tensor(pred_scores).reshape(-1)[ok].max())
