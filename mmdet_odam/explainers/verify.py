"""Trust, then verify: the detections an explainer explains must be the ones
``model.predict`` reports on the same batch.

A specific explainer mirrors part of mmdet (post-processing, candidate
selection); :func:`predict_mismatch` compares its rows with the detector's
own ``predict``. The first call on a model is checked (``verify='once'``,
the default; ``'always'`` checks every call, as the tests do); on a mismatch
the explainer logs the reason and the exact generic path explains the batch
instead, so a box the detector did not report is never explained.
"""
import weakref
from enum import Enum
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..utils.options import parse_enum

#: model -> set of explainer classes already verified on it.
_VERIFIED: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


class Verify(str, Enum):
    """When explained detections are compared with ``model.predict``."""
    ONCE = 'once'
    ALWAYS = 'always'
    NEVER = 'never'


def parse_verify(value) -> Verify:
    """Parse a ``verify`` option; raises ``ValueError`` listing names."""
    return parse_enum(Verify, value, 'verify')


def needs_check(model, explainer_cls: type, mode: Verify) -> bool:
    """Whether this call must be compared with ``predict``."""
    if mode == Verify.NEVER:
        return False
    return mode == Verify.ALWAYS or explainer_cls not in _VERIFIED.get(
        model, ())


def mark_verified(model, explainer_cls: type) -> None:
    _VERIFIED.setdefault(model, set()).add(explainer_cls)


def forget(model) -> None:
    """Forget the verifications of ``model`` (e.g. after changing its
    ``test_cfg``)."""
    _VERIFIED.pop(model, None)


def predict_detections(model, inputs: Tensor, data_samples: Sequence):
    """``model.predict`` (rescaled to the original image) on copies of the
    data samples; returns their ``pred_instances``."""
    with torch.no_grad():
        res = model.predict(inputs, [s.new() for s in data_samples],
                            rescale=True)
    return [r.pred_instances for r in res]


def rows_mismatch(bboxes: Tensor, scores: Tensor, labels: Tensor, pred,
                  score_thr: float, topk: Optional[int],
                  atol: float = 1e-3) -> Optional[str]:
    """Why explained rows (K, 4) / (K,) / (K,) are not the detections of
    ``pred`` (an ``InstanceData``) kept by ``score_thr`` and ``topk``;
    ``None`` when they are. Rows are matched one to one (same label, box
    within ``atol`` pixels plus 1e-4 relative, score within 1e-4)."""
    p_scores = pred.scores.detach().float().cpu()
    p_boxes = pred.bboxes.detach().float().cpu()
    p_labels = pred.labels.detach().cpu()
    expected = int((p_scores >= score_thr).sum())
    if topk is not None:
        expected = min(expected, int(topk))
    k = int(scores.shape[0])
    if k != expected:
        return (f'{k} detections explained, predict reports {expected} '
                f'with score >= {score_thr}' +
                (f' (topk {topk})' if topk is not None else ''))
    if k == 0:
        return None
    bboxes = bboxes.detach().float().cpu()
    scores = scores.detach().float().cpu()
    labels = labels.detach().cpu()
    tol = atol + 1e-4 * p_boxes.abs().max().clamp(min=1.0)
    box_ok = (bboxes[:, None] - p_boxes[None]).abs().amax(-1) <= tol
    ok = box_ok & ((scores[:, None] - p_scores[None]).abs() <= 1e-4) & (
        labels[:, None] == p_labels[None])
    used = torch.zeros(len(p_scores), dtype=torch.bool)
    for i in range(k):
        cand = (ok[i] & ~used).nonzero().flatten()
        if len(cand) == 0:
            j = int(((bboxes[i] - p_boxes).abs().amax(-1)).argmin())
            return (f'row {i} (label {int(labels[i])}, score '
                    f'{float(scores[i]):.4f}, box '
                    f'{[round(float(v), 1) for v in bboxes[i]]}) is not a '
                    f'detection of predict (nearest: label '
                    f'{int(p_labels[j])}, score {float(p_scores[j]):.4f}, '
                    f'box {[round(float(v), 1) for v in p_boxes[j]]})')
        used[cand[0]] = True
    return None


def predict_mismatch(model, inputs: Tensor, data_samples: Sequence,
                     explanations: List, score_thr: float,
                     topk: Optional[int]) -> Optional[str]:
    """Why ``explanations`` (one per image) are not ``model.predict``'s
    detections, or ``None`` when every image matches."""
    preds = predict_detections(model, inputs, data_samples)
    for i, (exp, pred) in enumerate(zip(explanations, preds)):
        why = rows_mismatch(exp.bboxes, exp.scores, exp.labels, pred,
                            score_thr, topk)
        if why is not None:
            return f'image {i}: {why}'
    return None
