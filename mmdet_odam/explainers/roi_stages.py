"""The generic path's second stage through a RoI extractor, by RoIAlign's
adjoint (no autograd over the levels).

A two-stage detector's detections depend on the neck levels only through
its RoI extractors' pooled features (R, C, ph, pw), one call per stage
(three in Cascade R-CNN), and each detection through the RoI of its own
proposal. With the first stage split by detection
(:func:`~mmdet_odam.core.split_by_owner`), a detection's gradient w.r.t.
one stage's pooled features is one RoI's (C, ph, pw); RoIAlign is linear,
so its gradient on the level is RoIAlign's adjoint of that, non-zero only
on a window around the RoI: mmcv's own backward kernel on the window
(:func:`~mmdet_odam.explainers.two_stage.roi_align_backward`). Autograd
instead runs that kernel onto whole zero levels, one backward per
detection and target.

Taken where mmdet's ``SingleRoIExtractor.forward`` runs unchanged on mmcv
``RoIAlign`` layers (average pooling) without ``roi_scale_factor``, its
levels are the explained leaves, and each detection's rows reach one RoI
of the call; each call checks that RoIAlign of the detections' RoIs gives
the extractor's recorded features. Otherwise the generic backward runs.
"""
import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..core.windows import Windows
from .two_stage import roi_align_backward, roi_windows, shared_window


def _is_mmcv_avg_roi_align(layer) -> bool:
    from mmcv.ops import RoIAlign
    return isinstance(layer, RoIAlign) and layer.pool_mode == 'avg' and \
        not getattr(layer, 'use_torchvision', False)


def roi_extractor_fits(extractor) -> List[str]:
    """Why ``extractor`` does not fit the adjoint (empty when it does)."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    why = []
    if not isinstance(extractor, SingleRoIExtractor) or \
            type(extractor).forward is not SingleRoIExtractor.forward or \
            type(extractor).map_roi_levels is not \
            SingleRoIExtractor.map_roi_levels:
        why.append(f'{type(extractor).__name__} is not mmdet\'s '
                   'SingleRoIExtractor')
    layers = getattr(extractor, 'roi_layers', [])
    if not all(_is_mmcv_avg_roi_align(layer) for layer in layers):
        why.append('its RoI layers are not mmcv RoIAlign (avg pooling)')
    return why


class RoiStage:
    """Second stage of :func:`~mmdet_odam.core.staged_row_grads` for one
    call of a RoI extractor.

    Args:
        extractor: the ``SingleRoIExtractor`` (checked by
            :func:`roi_extractor_fits`).
        feats (list[Tensor]): its levels (B, C, H_l, W_l), leaves of the
            explained layer.
        rois (Tensor): (R, 5) the call's RoIs (batch index, x1, y1, x2, y2).
        pooled (Tensor): (R, C, ph, pw) its output, the group tensor.
    """

    #: without the first-stage split there is nothing to gain: every
    #: row's backward would run once per extractor call
    needs_split = True
    kind = 'roi_adjoint'

    def __init__(self, extractor, feats: Sequence[Tensor], rois: Tensor,
                 pooled: Tensor):
        self.extractor = extractor
        self.feats = list(feats)
        self.rois = rois.detach()
        self.pooled = pooled
        self.levels = extractor.map_roi_levels(self.rois, len(self.feats)) \
            if len(self.feats) > 1 else torch.zeros(
                len(self.rois), dtype=torch.long, device=self.rois.device)
        self.declined: Optional[str] = None
        self.taken = 0  # calls that took the adjoint (for reports)

    def owned_vjp(self, owned, rows: Tensor, js: Sequence[int], mids,
                  leaves) -> Optional[list]:
        """``[(leaf index, Windows)]`` of ``rows`` from an
        :class:`~mmdet_odam.core.OwnedGrads` (empty when no row reaches the
        call), or None where the adjoint does not apply."""
        j = next((j for j in js if mids[j] is self.pooled), None)
        if self.declined is not None or j is None or owned.maps[j] is None:
            return None
        leaf_of = [next((k for k, lf in enumerate(leaves) if lf is f), None)
                   for f in self.feats]
        box = owned.boxes(j)  # 'image' = the RoI of each owner
        if box is None or None in leaf_of:
            return None
        sel = owned.reaches(j)[owned.owners[rows]].nonzero().squeeze(1)
        if len(sel) == 0:
            return []
        roi = box[owned.owners[rows[sel]], 0]
        zero = torch.zeros_like(roi)
        g = owned.window_grads(rows[sel], j, (roi, zero, zero,
                                              tuple(self.pooled.shape[-2:])))
        live = g.flatten(1).ne(0).any(1)
        sel, roi, g = sel[live], roi[live], g[live]
        if len(sel) == 0:
            return []
        if not self._same_features(roi):
            return None
        parts = []
        for lvl in self.levels[roi].unique().tolist():
            on = (self.levels[roi] == lvl).nonzero().squeeze(1)
            parts.append((leaf_of[lvl], self._level_windows(
                lvl, roi[on], g[on], sel[on])))
        self.taken += 1
        return parts

    def dense_vjp(self, sel, grads_by_id: dict, leaves) -> Optional[list]:
        """Declines: dense first-stage gradients may put one row on
        several RoIs; the generic backward takes them."""
        return None

    def _level_windows(self, lvl: int, roi: Tensor, g: Tensor,
                       rows: Tensor) -> Windows:
        """Windows on level ``lvl`` of RoIAlign's adjoint of ``g`` ((m, C,
        ph, pw), gradients w.r.t. the pooled features of RoIs ``roi``)."""
        layer = self.extractor.roi_layers[lvl]
        feat = self.feats[lvl]
        hw = tuple(feat.shape[-2:])
        boxes = self.rois[roi, 1:]
        y0, x0, (hp, wp), local = shared_window(
            roi_windows(boxes, layer, hw, margin=1), boxes, layer, hw,
            g.dtype)
        vals = roi_align_backward(layer, g.contiguous(), local,
                                  (len(roi), g.shape[1], hp, wp))
        return Windows(self.rois[roi, 0].long(), y0, x0, vals,
                       tuple(feat.shape), rows=rows)

    def _same_features(self, roi: Tensor) -> bool:
        """Whether RoIAlign of RoIs ``roi`` on their levels gives the
        extractor's recorded features (else records why)."""
        for lvl in self.levels[roi].unique().tolist():
            on = roi[self.levels[roi] == lvl]
            with torch.no_grad():
                again = self.extractor.roi_layers[lvl](
                    self.feats[lvl].detach(),
                    self.rois[on].to(self.feats[lvl].dtype))
            ref = self.pooled.detach()[on]
            tol = 1e-4 * float(ref.abs().max()) + 1e-12
            if not torch.allclose(again, ref, rtol=1e-4, atol=tol):
                self.declined = (f'RoIAlign on level {lvl} does not give '
                                 'the extractor\'s features')
                return False
        return True


def roi_stages(calls: Sequence[tuple], leaves: Sequence[Tensor]
               ) -> Dict[int, RoiStage]:
    """``{group index: RoiStage}`` for the recorded extractor ``calls``
    ((extractor, args, kwargs, output), one group per call in order) that
    fit (:func:`roi_extractor_fits`); reasons to the debug log."""
    from mmengine.logging import print_log
    found = {}
    for gi, (ext, args, kwargs, out) in enumerate(calls):
        why = roi_extractor_fits(ext)
        feats = args[0] if args else None
        if len(args) != 2 or kwargs.get('roi_scale_factor') is not None:
            why.append('called with a roi_scale_factor')
        elif not isinstance(feats, (tuple, list)) or not all(
                any(f is lf for lf in leaves) for f in feats):
            why.append('its inputs are not the explained layer')
        if why:
            print_log(f'RoI stage {gi}: adjoint not taken: '
                      f'{"; ".join(why)}', 'current', logging.DEBUG)
            continue
        found[gi] = RoiStage(ext, feats, args[1], out)
    return found

