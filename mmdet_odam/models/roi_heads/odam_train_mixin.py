"""Odam-Train for RoI heads (paper Sec. 3.2).

:class:`OdamTrainRoIMixin` is listed first in the bases of
``OdamStandardRoIHead``. When the RoI head was built with
``loss_odam=dict(type='OdamTrainLoss', ...)`` (stored as ``self.loss_odam``),
``bbox_loss`` adds ``loss_odam_con`` / ``loss_odam_sep`` to the bbox losses:

* samples are the positive RoIs of the head's own sampler (GT boxes added as
  proposals included, as in the authors' code), each with its assigned GT;
* the IoU used for the references is the one of the RoI's *regressed* box
  (class-specific deltas of its GT label, detached) with its GT, as the
  authors do (``rcnn_odamTrain`` L125-131);
* ``cls`` maps come from
  :func:`mmdet_odam.explainers.two_stage.roi_candidate_maps` with
  ``create_graph=True`` on the FPN level each RoI is pooled from, rendered on
  the common grid ``OdamTrainLoss.out_size(padded input)``.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from mmdet.structures.bbox import bbox_overlaps


class OdamTrainRoIMixin:
    """Adds ``loss_odam_con`` / ``loss_odam_sep`` to a RoI head's losses.

    The head must set ``self.loss_odam`` (an ``OdamTrainLoss`` or None).
    """

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: List) -> dict:
        """The next class's ``bbox_loss``; with ``loss_odam`` set, its
        ``loss_bbox`` dict also holds the Odam-Train losses."""
        bbox_results = super().bbox_loss(x, sampling_results)
        if getattr(self, 'loss_odam', None) is None:
            return bbox_results
        bbox_results['loss_bbox'].update(
            self.odam_train_losses(x, sampling_results, bbox_results))
        return bbox_results

    def odam_positives(self, sampling_results: List,
                       bbox_pred: Tensor) -> dict:
        """Positive RoIs with GT index, label, regressed box and its IoU.

        Args:
            sampling_results (list[SamplingResult]): Per image.
            bbox_pred (Tensor): (R, 4 or 4 * C) deltas of all sampled RoIs in
                ``bbox2roi([res.priors ...])`` order.

        Returns:
            dict[str, Tensor]: (P, 5) ``rois``, (P,) ``img_inds``, ``labels``,
            ``gt_inds``, ``ious`` and (P, 4) ``boxes`` (regressed, detached).
        """
        rows, img_inds, labels, gt_inds, gt_boxes, priors = ([], [], [], [],
                                                             [], [])
        offset = 0
        for i, res in enumerate(sampling_results):
            n_pos = len(res.pos_priors)
            dev = res.pos_priors.device
            rows.append(torch.arange(offset, offset + n_pos, device=dev))
            img_inds.append(torch.full((n_pos, ), i, dtype=torch.long,
                                       device=dev))
            labels.append(res.pos_gt_labels.long())
            gt_inds.append(res.pos_assigned_gt_inds.long())
            gt_boxes.append(res.pos_gt_bboxes)
            priors.append(res.pos_priors)
            offset += len(res.priors)
        rows, img_inds = torch.cat(rows), torch.cat(img_inds)
        labels, gt_inds = torch.cat(labels), torch.cat(gt_inds)
        gt_boxes, priors = torch.cat(gt_boxes), torch.cat(priors)
        head = self.bbox_head
        deltas = bbox_pred.detach()[rows]
        if deltas.size(1) != 4 and not head.reg_class_agnostic:
            deltas = deltas.view(len(rows), -1, 4)[torch.arange(len(rows)),
                                                    labels]
        boxes = head.bbox_coder.decode(priors, deltas[:, :4]) if len(
            rows) else priors.new_zeros(0, 4)
        if head.reg_decoded_bbox:
            boxes = deltas[:, :4]
        ious = bbox_overlaps(boxes, gt_boxes, is_aligned=True)
        rois = torch.cat([img_inds[:, None].to(priors.dtype), priors], 1)
        return dict(rois=rois, img_inds=img_inds, labels=labels,
                    gt_inds=gt_inds, ious=ious, boxes=boxes)

    def odam_train_losses(self, x: Tuple[Tensor], sampling_results: List,
                          bbox_results: dict) -> dict:
        """Odam-Train losses of one batch (see module doc)."""
        from mmdet_odam.explainers.targets import odam_train_map_options
        from mmdet_odam.explainers.two_stage import roi_candidate_maps
        pos = self.odam_positives(sampling_results, bbox_results['bbox_pred'])
        loss_odam = self.loss_odam
        keep = loss_odam.select(pos['ious'], pos['img_inds'], pos['gt_inds'])
        pos = {k: v[keep] for k, v in pos.items()}
        anchor = bbox_results['cls_score'].sum() * 0.
        if pos['img_inds'].numel() == 0:
            return dict(loss_odam_con=anchor, loss_odam_sep=anchor)
        ext = self.bbox_roi_extractor
        s0 = float(ext.featmap_strides[0])
        pad_shape = (int(x[0].shape[-2] * s0), int(x[0].shape[-1] * s0))
        maps = roi_candidate_maps(self, x, pos['rois'], pos['labels'],
                                  loss_odam.out_size(pad_shape),
                                  odam_train_map_options(loss_odam),
                                  pad_shape=pad_shape)
        out = loss_odam(maps, pos['gt_inds'], pos['ious'], pos['img_inds'],
                        boxes=pos['boxes'])
        return {k: v + anchor for k, v in out.items()}
