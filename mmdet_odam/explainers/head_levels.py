"""A dense head's outputs by level, and its levels re-run on crops.

mmdet's dense heads map a tuple of level maps to per-level outputs
(``head.forward(feats) -> (cls_scores, bbox_preds, ...)``, lists of one
tensor per level). The generic path takes a detection's gradient in two
stages through those outputs; where a level's tower is proved local
(:func:`~mmdet_odam.core.receptive_radius`) its second stage runs the head
on crops around the detections (:class:`~mmdet_odam.core.CroppedLevel`).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core import CroppedLevel, NotLocal, receptive_radius

#: (level index, or None for outputs not given per level; tensors)
LevelGroup = Tuple[Optional[int], List[Tensor]]


def indexed_level_groups(outputs) -> List[LevelGroup]:
    """The output tensors that require grad, one group per level and one
    more for all other tensors, each with its level (None for the rest);
    empty groups left out."""
    outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    lists = [o for o in outs if isinstance(o, (tuple, list)) and o and all(
        isinstance(t, Tensor) for t in o)]
    n = max((len(o) for o in lists), default=0)
    groups: List[List[Tensor]] = [[] for _ in range(n + 1)]  # last: rest
    for o in outs:
        if isinstance(o, Tensor):
            groups[n].append(o)
        elif any(o is lst for lst in lists):
            for lvl, t in enumerate(o):
                groups[lvl if len(o) == n else n].append(t)
    return [(lvl if lvl < n else None, kept) for lvl, kept in (
        (lvl, [t for t in g if t.requires_grad])
        for lvl, g in enumerate(groups)) if kept]


def level_groups_of(outputs) -> Optional[List[List[Tensor]]]:
    """A dense head's forward outputs grouped by level: ``(cls_scores,
    bbox_preds, ...)``, lists of one tensor per level, give one group per
    level; all other output tensors form one more group (they may share
    their graph, e.g. a DETR head's scores and boxes its decoder). None
    when no output tensor requires grad."""
    groups = [g for _, g in indexed_level_groups(outputs)]
    return groups or None


def _level_forward(head: torch.nn.Module, feats: Sequence[Tensor],
                   level: int):
    """crops (m, C, h, w) of level ``level`` -> that level's outputs of
    ``head.forward`` on them (the other levels get one cell of their own
    map per crop, the least that keeps the head's forward valid)."""
    def forward(crops: Tensor) -> List[Tensor]:
        m = crops.shape[0]
        ins = [crops if i == level else f.detach()[:1, :, :1, :1]
               .expand(m, -1, -1, -1).contiguous().requires_grad_(True)
               for i, f in enumerate(feats)]
        outs = head.forward(tuple(ins))
        return next((g for lvl, g in indexed_level_groups(outs)
                     if lvl == level), [])
    return forward


def cropped_levels(head: torch.nn.Module, feats, outputs,
                   leaves: Sequence[Tensor]) -> Dict[int, CroppedLevel]:
    """``{group index: CroppedLevel}`` for the groups of
    :func:`level_groups_of` (``outputs``) whose level is a leaf of the
    explained layer fed to ``head`` (``feats``, its forward's input) and
    whose map from it is proved local; the reasons of the others go to
    the debug log."""
    from mmengine.logging import print_log
    if not isinstance(feats, (tuple, list)) or not all(
            any(f is lf for lf in leaves) for f in feats):
        return {}
    found = {}
    for gi, (level, group) in enumerate(indexed_level_groups(outputs)):
        if level is None or level >= len(feats):
            continue
        leaf = feats[level]
        try:
            radius = receptive_radius(group, leaf, [
                lf for lf in leaves if lf is not leaf])
        except NotLocal as e:
            print_log(f'level {level}: not taken on crops: {e}', 'current',
                      logging.DEBUG)
            continue
        if radius is not None:
            found[gi] = CroppedLevel(_level_forward(head, feats, level),
                                     leaf, group, radius)
    return found
