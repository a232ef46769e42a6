"""Odam-Train for dense heads (paper Sec. 3.2).

:class:`OdamTrainDenseMixin` is listed first in the bases of ``OdamFCOSHead``
(and the other ODAM dense heads). When the head was built with
``loss_odam=dict(type='OdamTrainLoss', ...)`` (stored as ``self.loss_odam``),
``loss_by_feat`` adds ``loss_odam_con`` and ``loss_odam_sep`` to the head's
own losses:

1. the positives of the head's own assigner are recomputed together with the
   index of the GT each one is assigned to (FCOS: the same centre-sampling /
   regress-range / min-area rule as ``FCOSHead._get_targets_single``);
2. the IoU of each positive's (detached) predicted box with its GT is used to
   pick references and to cap the samples (``OdamTrainLoss.select``);
3. their ``cls`` ODAM maps are rendered differentiably
   (:func:`mmdet_odam.explainers.dense.dense_candidate_maps`,
   ``create_graph=True``) on a common grid (``OdamTrainLoss.out_size``), so
   the loss reaches the head's weights (through the gradients) and the
   backbone / neck (through the features);
4. :class:`mmdet_odam.losses.OdamTrainLoss` turns them into the two losses.

``loss_by_feat`` does not receive the features, so :meth:`loss` keeps them
(and, for the patch path, the GroupNorm statistics of its forward) on the
head for the duration of the call only. The reversed head (FCOS / ATSS /
RetinaNet conv towers, :mod:`mmdet_odam.explainers.reversed_head`) runs one
more head forward with frozen GN statistics for the maps instead of a
forward per positive's window.
"""
import inspect
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mmdet.models.dense_heads import FCOSHead
from mmdet.models.utils import unpack_gt_instances
from mmdet.structures.bbox import bbox_overlaps

from ...core import Candidates

INF = 1e8
_FEATS = '_odam_train_feats'


class OdamTrainDenseMixin:
    """Adds ``loss_odam_con`` / ``loss_odam_sep`` to a dense head's losses.

    The head must set ``self.loss_odam`` (an ``OdamTrainLoss`` or None; no
    class-level default here, it would shadow the registered sub-module).
    Positives are implemented for FCOS-style heads (``FCOSHead`` subclasses);
    other heads refuse ``loss_odam`` when they are built (``ValueError``).
    """

    def loss(self, x: Tuple[Tensor], batch_data_samples) -> dict:
        """As ``BaseDenseHead.loss``; with ``loss_odam`` set, the features
        (and, for the patch path, the forward's GroupNorm statistics) are
        kept for :meth:`loss_by_feat` during the call."""
        if getattr(self, 'loss_odam', None) is None:
            return super().loss(x, batch_data_samples)
        from mmdet_odam.explainers.dense import head_forward_with_stats
        from mmdet_odam.explainers.reversed_head import reversed_head_spec
        if reversed_head_spec(self) is not None:
            # the reversed head records its own frozen-statistics forward
            # (same values; the maps' derivative as on the patch path)
            outs, stats = self(x), None
        else:  # patch path: GN statistics of this forward
            outs, stats = head_forward_with_stats(self, x)
        gt, gt_ignore, metas = unpack_gt_instances(batch_data_samples)
        self.__dict__[_FEATS] = (tuple(x), stats)
        try:
            return self.loss_by_feat(*outs, gt, metas, gt_ignore)
        finally:
            self.__dict__.pop(_FEATS, None)

    def loss_by_feat(self, *args, **kwargs) -> Dict[str, Tensor]:
        """The next class's ``loss_by_feat`` plus the Odam-Train losses."""
        losses = super().loss_by_feat(*args, **kwargs)
        if getattr(self, 'loss_odam', None) is None:
            return losses
        stash = self.__dict__.get(_FEATS)
        if stash is None:
            raise RuntimeError(
                'Odam-Train needs the head input features: call the head\'s '
                '`loss(x, batch_data_samples)` instead of `loss_by_feat` '
                'directly when `loss_odam` is set')
        bound = inspect.signature(super().loss_by_feat).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        losses.update(
            self.odam_train_losses(stash[0], a['cls_scores'], a['bbox_preds'],
                                   a['batch_gt_instances'],
                                   a['batch_img_metas'], stash[1]))
        return losses

    # ------------------------------------------------------------------
    def odam_train_losses(self, feats: Tuple[Tensor],
                          cls_scores: List[Tensor], bbox_preds: List[Tensor],
                          batch_gt_instances, batch_img_metas,
                          norm_stats: Optional[dict] = None) -> dict:
        """Odam-Train losses of one batch.

        Args:
            feats (tuple[Tensor]): Head inputs, (B, C, H_l, W_l) per level.
            cls_scores, bbox_preds (list[Tensor]): Head outputs per level.
            batch_gt_instances (list[InstanceData]): GT per image.
            batch_img_metas (list[dict]): Needs ``batch_input_shape``.
            norm_stats (dict, optional): GroupNorm statistics of the
                forward (``head_forward_with_stats``) for the patch path;
                computed when missing (the reversed head records its own
                forward).

        Returns:
            dict: ``loss_odam_con``, ``loss_odam_sep``.
        """
        from ...explainers.dense import dense_candidate_maps
        from ...explainers.targets import odam_train_map_options
        pos = self.odam_positives(cls_scores, bbox_preds, batch_gt_instances)
        loss_odam = self.loss_odam
        keep = loss_odam.select(pos['ious'], pos['img_inds'],
                                pos['gt_inds'])
        pos = {k: v[keep] for k, v in pos.items()}
        anchor = sum(s.sum() for s in cls_scores) * 0.
        if pos['img_inds'].numel() == 0:
            return dict(loss_odam_con=anchor, loss_odam_sep=anchor)
        pad_shape = tuple(batch_img_metas[0]['batch_input_shape'][:2])
        out_size = loss_odam.out_size(pad_shape)
        cands = Candidates(pos['img_inds'], pos['level_ids'],
                           pos['loc_inds'], pos['labels'], pos['boxes'])
        maps = dense_candidate_maps(
            self, feats, cands, out_size, odam_train_map_options(loss_odam),
            pad_shape=pad_shape, norm_stats=norm_stats)
        out = loss_odam(maps, pos['gt_inds'], pos['ious'], pos['img_inds'],
                        boxes=pos['boxes'])
        return {k: v + anchor for k, v in out.items()}

    def odam_positives(self, cls_scores: List[Tensor],
                       bbox_preds: List[Tensor],
                       batch_gt_instances) -> Dict[str, Tensor]:
        """Positive predictions of the head's assigner with their GT index.

        Returns:
            dict[str, Tensor]: (P,) ``img_inds``, ``level_ids``, ``loc_inds``
            (flat cell index within the level), ``labels``, ``gt_inds``
            (within the image), ``ious`` (predicted box vs its GT, detached)
            and (P, 4) ``boxes`` (decoded predicted boxes, detached, input
            pixels).
        """
        if not isinstance(self, FCOSHead):
            raise NotImplementedError(
                f'Odam-Train positives are implemented for FCOS heads only, '
                f'got {type(self).__name__}; build it without `loss_odam`')
        device = bbox_preds[0].device
        featmap_sizes = [s.size()[-2:] for s in cls_scores]
        points = self.prior_generator.grid_priors(
            featmap_sizes, dtype=bbox_preds[0].dtype, device=device)
        num_per_lvl = [p.size(0) for p in points]
        ranges = torch.cat([
            p.new_tensor(r)[None].expand_as(p)
            for p, r in zip(points, self.regress_ranges)
        ])
        concat_points = torch.cat(points)
        lvl_of_point = torch.cat([
            torch.full((n, ), i, dtype=torch.long, device=device)
            for i, n in enumerate(num_per_lvl)
        ])
        lvl_start = torch.tensor([0] + num_per_lvl[:-1],
                                 device=device).cumsum(0)
        out = {k: [] for k in ('img_inds', 'level_ids', 'loc_inds', 'labels',
                               'gt_inds', 'ious', 'boxes')}
        for img, gt in enumerate(batch_gt_instances):
            gt_inds = self._odam_fcos_assign(gt.bboxes, concat_points, ranges,
                                             num_per_lvl)
            pidx = (gt_inds >= 0).nonzero().reshape(-1)
            g = gt_inds[pidx]
            lvl = lvl_of_point[pidx]
            loc = pidx - lvl_start[lvl]
            dist = torch.zeros((pidx.numel(), 4), device=device,
                               dtype=bbox_preds[0].dtype)
            for i in range(len(bbox_preds)):
                m = lvl == i
                if m.any():
                    d = bbox_preds[i][img].detach().flatten(1)[:, loc[m]].t()
                    if self.norm_on_bbox:
                        d = d * self.strides[i]
                    dist[m] = d
            boxes = self.bbox_coder.decode(concat_points[pidx], dist)
            gt_boxes = gt.bboxes[g]
            ious = bbox_overlaps(boxes, gt_boxes, is_aligned=True)
            out['img_inds'].append(torch.full_like(pidx, img))
            out['level_ids'].append(lvl)
            out['loc_inds'].append(loc)
            out['labels'].append(gt.labels[g])
            out['gt_inds'].append(g)
            out['ious'].append(ious)
            out['boxes'].append(boxes)
        if not batch_gt_instances:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return dict(img_inds=empty, level_ids=empty, loc_inds=empty,
                        labels=empty, gt_inds=empty,
                        ious=torch.zeros(0, device=device),
                        boxes=torch.zeros(0, 4, device=device))
        return {k: torch.cat(v) for k, v in out.items()}

    def _odam_fcos_assign(self, gt_bboxes: Tensor, points: Tensor,
                          regress_ranges: Tensor,
                          num_points_per_lvl: List[int]) -> Tensor:
        """``FCOSHead._get_targets_single``'s assignment, returning the GT.

        Args:
            gt_bboxes (Tensor): (G, 4) GT boxes of one image.
            points (Tensor): (P, 2) points of all levels.
            regress_ranges (Tensor): (P, 2) regress range of each point.
            num_points_per_lvl (list[int]): Points per level.

        Returns:
            Tensor: (P,) long, assigned GT index or -1 for background.
        """
        num_points, num_gts = points.size(0), gt_bboxes.size(0)
        if num_gts == 0:
            return points.new_full((num_points, ), -1, dtype=torch.long)
        areas = (gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (
            gt_bboxes[:, 3] - gt_bboxes[:, 1])
        areas = areas[None].repeat(num_points, 1)
        regress_ranges = regress_ranges[:, None, :].expand(
            num_points, num_gts, 2)
        gt_bboxes = gt_bboxes[None].expand(num_points, num_gts, 4)
        xs = points[:, 0, None].expand(num_points, num_gts)
        ys = points[:, 1, None].expand(num_points, num_gts)
        bbox_targets = torch.stack(
            (xs - gt_bboxes[..., 0], ys - gt_bboxes[..., 1],
             gt_bboxes[..., 2] - xs, gt_bboxes[..., 3] - ys), -1)
        if self.center_sampling:
            radius = self.center_sample_radius
            cx = (gt_bboxes[..., 0] + gt_bboxes[..., 2]) / 2
            cy = (gt_bboxes[..., 1] + gt_bboxes[..., 3]) / 2
            stride = cx.new_zeros(cx.shape)
            begin = 0
            for lvl, n in enumerate(num_points_per_lvl):
                stride[begin:begin + n] = self.strides[lvl] * radius
                begin += n
            x0 = torch.where(cx - stride > gt_bboxes[..., 0], cx - stride,
                             gt_bboxes[..., 0])
            y0 = torch.where(cy - stride > gt_bboxes[..., 1], cy - stride,
                             gt_bboxes[..., 1])
            x1 = torch.where(cx + stride > gt_bboxes[..., 2],
                             gt_bboxes[..., 2], cx + stride)
            y1 = torch.where(cy + stride > gt_bboxes[..., 3],
                             gt_bboxes[..., 3], cy + stride)
            center_bbox = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys),
                                      -1)
            inside = center_bbox.min(-1)[0] > 0
        else:
            inside = bbox_targets.min(-1)[0] > 0
        max_dist = bbox_targets.max(-1)[0]
        in_range = (max_dist >= regress_ranges[..., 0]) & (
            max_dist <= regress_ranges[..., 1])
        areas[inside == 0] = INF
        areas[in_range == 0] = INF
        min_area, min_area_inds = areas.min(dim=1)
        min_area_inds[min_area == INF] = -1
        return min_area_inds
