"""Box and detection helpers shared by the explainers (pure torch)."""
from typing import Optional

import torch
from torch import Tensor


def _as_boxes(x) -> Tensor:
    x = torch.as_tensor(x)
    return (x if x.is_floating_point() else x.float()).reshape(-1, 4)


def box_iou(a: Tensor, b: Tensor, plus_one: bool = False) -> Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M).

    ``plus_one=False`` (default): no pixel convention; ``True``: the
    authors' ``(x2 - x1 + 1)`` one. Empty boxes have area 0 (union clamped
    to 1e-9, so two empty boxes give IoU 0). Sequences are accepted;
    integer boxes are computed in float32.
    """
    a, b = _as_boxes(a), _as_boxes(b)
    off = 1.0 if plus_one else 0.0
    lt = a[:, None, :2].maximum(b[None, :, :2])
    rb = a[:, None, 2:].minimum(b[None, :, 2:])
    inter = (rb - lt + off).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2] + off).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2] + off).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-9)


def box_wh_in_cells(boxes: Tensor, stride) -> Tensor:
    """(N, 4) xyxy boxes in input pixels -> (N, 2) (w, h) in cells of a
    level with ``stride = (sy, sx)``."""
    return torch.stack([(boxes[:, 2] - boxes[:, 0]) / stride[1],
                        (boxes[:, 3] - boxes[:, 1]) / stride[0]], 1)


def check_boxes(boxes, ori_shape, device=None) -> Tensor:
    """Given boxes as a float32 (K, 4) xyxy tensor in original-image pixels.

    Raises ``ValueError`` for a box outside ``ori_shape`` (H, W, ...) by more
    than 1 px, or an empty one.
    """
    b = torch.as_tensor(boxes, dtype=torch.float32,
                        device=device).reshape(-1, 4)
    h, w = (float(v) for v in ori_shape[:2])
    bad = (b[:, 0] < -1) | (b[:, 1] < -1) | (b[:, 2] > w + 1) | \
        (b[:, 3] > h + 1) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bool(bad.any()):
        raise ValueError(
            f'Box {b[bad][0].tolist()} is outside the image (width {w:g}, '
            f'height {h:g}) or empty; boxes are xyxy in original-image '
            'pixels')
    return b


def match_boxes(cand_boxes: Tensor, cand_scores: Tensor, cand_labels: Tensor,
                boxes: Tensor, labels=None) -> Tensor:
    """Index of the best candidate per given box: max IoU (restricted to
    ``labels`` when given), ties (within 1e-6) broken by score.

    Args:
        cand_boxes, cand_scores, cand_labels (Tensor): (M, 4) xyxy, (M,),
            (M,) candidates.
        boxes (Tensor): (K, 4) xyxy given boxes (same frame as cand_boxes).
        labels (optional): (K,) class per given box.

    Returns:
        Tensor: (K,) long candidate indices.
    """
    if len(cand_boxes) == 0:
        raise ValueError('the detector produced no candidates to match the '
                         'given boxes')
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long,
                                 device=boxes.device).reshape(-1)
        if labels.numel() != boxes.shape[0]:
            raise ValueError('labels must have one entry per box')
    iou = box_iou(boxes, cand_boxes)
    out = []
    for k in range(len(boxes)):
        ok = torch.ones_like(cand_scores, dtype=torch.bool)
        if labels is not None:
            ok = cand_labels == labels[k]
            if not bool(ok.any()):
                raise ValueError(f'no candidate of class {int(labels[k])} '
                                 'to match the given box')
        key = torch.where(ok, iou[k], torch.full_like(iou[k], -1.0))
        cand = ((key >= key.max() - 1e-6) & ok).nonzero().squeeze(1)
        out.append(cand[cand_scores[cand].argmax()])
    return torch.stack(out) if out else torch.zeros(
        0, dtype=torch.long, device=boxes.device)


def top_scoring(scores: Tensor, score_thr: float,
                topk: Optional[int] = None) -> Tensor:
    """Indices (K,) of the rows with ``scores >= score_thr``, by descending
    score, at most ``topk`` of them (``None``: all)."""
    keep = torch.nonzero(scores >= score_thr).squeeze(1)
    return keep[torch.argsort(scores[keep], descending=True)][:topk]
