"""Batched ODAM for two-stage detectors (Faster R-CNN: ``StandardRoIHead``
with a ``BBoxHead``), paper App. A.1 / A.5.3.

Each RoI's class scores and box deltas depend only on its own pooled RoI
features (R, C, 7, 7), so ONE backward of the sum over RoIs of the target
gives the gradient of every detection w.r.t. its RoI features. Because
RoIAlign is linear in the feature map, the gradient w.r.t. the FPN level the
RoI was pooled from is exactly ``RoIAlign^T(d target / d roi_feat)``; it is
computed with mmcv's own RoIAlign backward (:func:`roi_align_adjoint`) on a
window of the level around the RoI (the adjoint is zero outside the RoI's
bilinear footprint, the window adds the smoothing radius, so the result is
the same as on the whole level, see :func:`roi_windows`). The map is linear
in the ph*pw pooled gradients, so it is assembled from a smoothed adjoint
basis of ph*pw maps per RoI (:func:`level_window_maps`): exact, and the
Gaussian runs on 49 channels instead of targets x C.

Layers:
    - ``'fpn_level'`` (default): the FPN level the RoI was pooled from
      (``roi_extractor.map_roi_levels``), H = f(sum_c Phi(G)_c * A_c) on the
      level, aligned to the original image with
      :func:`mmdet_odam.core.level_to_image`.
    - ``'roi'`` (or ``'roi_head.bbox_roi_extractor'``): the 7x7 map
      f(sum_c g_c * roi_feat_c) bilinearly placed into the RoI box in the
      image (App. A.5.3); no smoothing at 7x7.
    - any other module name: the exact autograd path of
      :class:`~mmdet_odam.explainers.generic.GenericExplainer` on the same
      detections.

Targets: ``cls`` = softmax probability of the detection's label (exactly the
reported score); box targets on the box decoded from the class-specific
deltas in network-input pixels *before* clipping to the image (clipping would
make a coordinate at the border constant, with a zero gradient), signed
left = -x1, top = -y1, right = x2, bottom = y2.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import RoIAlign
from mmdet.models.layers import multiclass_nms
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import bbox2roi, get_box_tensor, scale_boxes
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import Tensor

from ..core import (apply_grad_mode, box_sigmas, check_boxes,
                    gaussian_smooth, kernel_radius, level_to_padded,
                    match_boxes, top_scoring)
from ..adapters.roi import check_roi_head, probe_two_stage_detector
from ..nms.odam_nms import batched_odam_nms, nms_map_size
from .base import BaseExplainer
from .builder import EXPLAINERS
from .results import Explanation
from .targets import MapOptions, Target, box_target, parse_smoothing

#: Layer names understood by :class:`TwoStageExplainer` besides module names.
FPN_LEVEL = 'fpn_level'
ROI = 'roi'
ROI_ALIASES = ('roi', 'roi_head.bbox_roi_extractor')

#: Memory budget (bytes) of one chunk of level-window gradients.
DEFAULT_CHUNK_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# RoIAlign adjoint
# ---------------------------------------------------------------------------
def roi_align_backward(roi_layer: RoIAlign, grad_roi: Tensor, rois: Tensor,
                       feat_shape: Sequence[int]) -> Tensor:
    """mmcv's RoIAlign backward kernel (``pool_mode='avg'``): the gradient
    w.r.t. the feature map of ``sum(grad_roi * roi_layer(feat, rois))``."""
    from mmcv.ops.roi_align import ext_module
    out = grad_roi.new_zeros(tuple(int(v) for v in feat_shape))
    empty = grad_roi.new_zeros(0)
    ph, pw = roi_layer.output_size
    ext_module.roi_align_backward(
        grad_roi.contiguous(), rois.to(grad_roi.dtype).contiguous(), empty,
        empty, out, aligned_height=int(ph), aligned_width=int(pw),
        spatial_scale=float(roi_layer.spatial_scale),
        sampling_ratio=int(roi_layer.sampling_ratio), pool_mode=1,
        aligned=bool(roi_layer.aligned))
    return out


class _RoIAlignAdjoint(torch.autograd.Function):
    """G = RoIAlign^T(g): forward is mmcv's RoIAlign backward kernel,
    backward is its forward (the adjoint of the adjoint), so G is
    differentiable w.r.t. ``g`` to any order."""

    @staticmethod
    def forward(ctx, grad_roi, rois, feat_shape, roi_layer):
        ctx.roi_layer = roi_layer
        ctx.save_for_backward(rois)
        return roi_align_backward(roi_layer, grad_roi, rois, feat_shape)

    @staticmethod
    def backward(ctx, grad_feat):
        (rois, ) = ctx.saved_tensors
        return ctx.roi_layer(grad_feat.contiguous(), rois), None, None, None


def roi_align_adjoint(roi_layer: RoIAlign, grad_roi: Tensor, rois: Tensor,
                      feat_shape: Sequence[int]) -> Tensor:
    """Adjoint of a (linear) mmcv RoIAlign: gradient of
    ``sum(grad_roi * roi_layer(feat, rois))`` w.r.t. ``feat``.

    Args:
        roi_layer (RoIAlign): the pooling layer (``pool_mode='avg'``).
        grad_roi (Tensor): (R, C, ph, pw) gradients w.r.t. the pooled
            features.
        rois (Tensor): (R, 5) ``(batch_idx, x1, y1, x2, y2)`` in input pixels.
        feat_shape (tuple): (B, C, H, W) of the feature map.

    Returns:
        Tensor: (B, C, H, W), differentiable w.r.t. ``grad_roi``.
    """
    return _RoIAlignAdjoint.apply(grad_roi, rois.to(grad_roi.dtype),
                                  tuple(int(s) for s in feat_shape),
                                  roi_layer)


def roi_windows(boxes: Tensor, roi_layer: RoIAlign, level_hw: Sequence[int],
                margin: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cell ranges ``[a, b)`` (rows and columns) that hold RoIAlign's
    footprint of each box plus ``margin`` cells, clipped to the level.

    On an edge that is not the level border, sample points stay >= ``margin``
    cells inside, so RoIAlign's border clamping and a smoothing of radius
    < margin behave as on the whole level.

    Returns:
        tuple: ya, yb, xa, xb, each (N,) long.
    """
    h, w = int(level_hw[0]), int(level_hw[1])
    scale = float(roi_layer.spatial_scale)
    off = 0.5 if roi_layer.aligned else 0.0
    b = boxes.detach().float() * scale - off
    if not roi_layer.aligned:  # legacy mode forces RoIs of >= 1 cell
        b = torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 1)], 1)
    lo = torch.floor(b[:, :2]).long() - margin
    hi = torch.floor(b[:, 2:]).long() + 2 + margin
    xa = lo[:, 0].clamp(0, w - 1)
    ya = lo[:, 1].clamp(0, h - 1)
    xb = torch.maximum(hi[:, 0].clamp(0, w), xa + 1)
    yb = torch.maximum(hi[:, 1].clamp(0, h), ya + 1)
    return ya, yb, xa, xb


def shared_window(ranges: Sequence[Tensor], boxes: Tensor,
                  roi_layer: RoIAlign, level_hw: Sequence[int], dtype):
    """One window size for some RoIs: the largest of their cell
    ``ranges`` ((ya, yb, xa, xb) of :func:`roi_windows`), each window
    shifted inside the level, and the RoIs in their own window's
    coordinates (batch index r = window r), for RoIAlign's backward on the
    windows.

    Returns:
        tuple: ``y0`` (m,), ``x0`` (m,), ``(hp, wp)``, ``rois_w`` (m, 5).
    """
    ya, yb, xa, xb = ranges
    h, w = int(level_hw[0]), int(level_hw[1])
    hp, wp = int((yb - ya).max()), int((xb - xa).max())
    y0 = torch.minimum(ya, torch.full_like(ya, h - hp))
    x0 = torch.minimum(xa, torch.full_like(xa, w - wp))
    stride = 1.0 / float(roi_layer.spatial_scale)
    rois_w = torch.cat([
        torch.arange(len(boxes), device=boxes.device, dtype=dtype)[:, None],
        boxes.detach().to(dtype) -
        torch.stack([x0, y0, x0, y0], 1).to(dtype) * stride
    ], 1)
    return y0, x0, (hp, wp), rois_w


def _place_windows(win: Tensor, y0: Tensor, x0: Tensor,
                   level_hw: Sequence[int]) -> Tensor:
    """(N, T, hp, wp) windows at cells (y0, x0) into zero (N, T, H, W)."""
    n, t, hp, wp = win.shape
    out = win.new_zeros(n, t, int(level_hw[0]), int(level_hw[1]))
    dev = win.device
    ys = y0[:, None] + torch.arange(hp, device=dev)[None]
    xs = x0[:, None] + torch.arange(wp, device=dev)[None]
    ar = torch.arange(n, device=dev)[:, None, None, None]
    tt = torch.arange(t, device=dev)[None, :, None, None]
    out[ar, tt, ys[:, None, :, None], xs[:, None, None, :]] = win
    return out


def _chunks(order: Tensor, cost: Tensor, budget: float) -> List[Tensor]:
    """Split ``order`` into consecutive chunks whose max cost times length
    stays below ``budget`` (at least one item per chunk)."""
    out, start, cur = [], 0, 0.0
    cost = cost.tolist()
    order_l = order.tolist()
    for i, j in enumerate(order_l):
        cur = max(cur, cost[j])
        if i > start and cur * (i - start + 1) > budget:
            out.append(order[start:i])
            start, cur = i, cost[j]
    if start < len(order_l):
        out.append(order[start:])
    return out


def level_window_maps(roi_layer: RoIAlign, feat: Tensor, img_inds: Tensor,
                      rois_xyxy: Tensor, grad_roi: Tensor, sigmas: Tensor,
                      grad_mode='pos_relu',
                      chunk_bytes: int = DEFAULT_CHUNK_BYTES):
    """ODAM maps on one FPN level from gradients w.r.t. pooled RoI features.

    G_tc = RoIAlign^T(g_tc) is linear in the P = ph*pw pooled values, so with
    the smoothed adjoint basis B_p = Phi(RoIAlign^T(e_p)) (P maps per RoI,
    computed with mmcv's RoIAlign backward on a window of the level):
    ``sum_c Phi(G_tc) A_c = sum_p B_p * (sum_c g_tcp A_c)``. Exact, and the
    smoothing runs on P channels instead of T*C.

    Args:
        roi_layer (RoIAlign): the level's pooling layer.
        feat (Tensor): (B, C, H, W) level features A (may carry a graph).
        img_inds (Tensor): (N,) image of each RoI.
        rois_xyxy (Tensor): (N, 4) RoI boxes in input pixels.
        grad_roi (Tensor): (N, T, C, ph, pw) d target_t / d roi_feat (may
            carry a graph).
        sigmas (Tensor): (N,) Gaussian sigma in cells (0 = no smoothing).
        grad_mode: see :class:`~mmdet_odam.explainers.targets.GradMode`.

    Yields:
        tuple: (inds (n,), maps (n, T, hp, wp), y0 (n,), x0 (n,)) per chunk:
        maps on windows whose top-left cell is (y0, x0); the map is zero
        outside the window.
    """
    n, t, c = grad_roi.shape[:3]
    ph, pw = grad_roi.shape[-2:]
    npool = int(ph) * int(pw)
    h, w = feat.shape[-2:]
    dev = feat.device
    radii = torch.tensor([kernel_radius(s) for s in sigmas.tolist()],
                         dtype=torch.long)
    margin = int(radii.max()) + 1 if n else 1
    ya, yb, xa, xb = roi_windows(rois_xyxy, roi_layer, (h, w), margin)
    # group windows of similar size, bound chunk memory
    area = ((yb - ya) * (xb - xa)).cpu()
    order = torch.argsort(area, descending=True)
    per_cell = (3 * npool + c + 2 * t * npool) * feat.element_size()
    eye = torch.eye(npool, device=dev, dtype=feat.dtype).reshape(
        1, npool, int(ph), int(pw))
    for inds in _chunks(order, area.float() * per_cell, chunk_bytes):
        inds = inds.to(dev)
        y0, x0, (hp, wp), rois_w = shared_window(
            [r[inds] for r in (ya, yb, xa, xb)], rois_xyxy[inds], roi_layer,
            (h, w), feat.dtype)
        m = len(inds)
        with torch.no_grad():  # geometry only: constant
            basis = roi_align_backward(roi_layer, eye.expand(m, -1, -1, -1),
                                       rois_w, (m, npool, hp, wp))
            basis = gaussian_smooth(basis, sigmas[inds].to(dev))
        ys = y0[:, None] + torch.arange(hp, device=dev)[None]
        xs = x0[:, None] + torch.arange(wp, device=dev)[None]
        a = feat[img_inds[inds][:, None, None], :, ys[:, :, None],
                 xs[:, None, :]].reshape(m, hp * wp, c)  # (m, X, C)
        g = grad_roi[inds].reshape(m, t, c, npool).transpose(2, 3).reshape(
            m, t * npool, c)
        prod = torch.bmm(g, a.transpose(1, 2))  # (m, T*P, X)
        raw = (prod.reshape(m, t, npool, hp * wp) *
               basis.reshape(m, 1, npool, hp * wp)).sum(2)
        yield inds, apply_grad_mode(raw.reshape(m, t, hp, wp),
                                    grad_mode), y0, x0


# ---------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------
def _head_forward(roi_head, roi_feats: Tensor):
    if getattr(roi_head, 'with_shared_head', False):
        roi_feats = roi_head.shared_head(roi_feats)
    return roi_head.bbox_head(roi_feats)


def roi_target_values(roi_head, cls_score: Tensor, bbox_pred: Tensor,
                      rois: Tensor, labels: Tensor,
                      target: Target) -> Tensor:
    """Scalar target per row: softmax score of ``labels`` or a signed
    coordinate of the (unclipped) decoded box in input pixels.

    Args:
        cls_score (Tensor): (N, num_classes + 1) logits.
        bbox_pred (Tensor): (N, 4 * num_classes) or (N, 4) deltas.
        rois (Tensor): (N, 5).
        labels (Tensor): (N,) long.

    Returns:
        Tensor: (N,).
    """
    ar = torch.arange(len(labels), device=labels.device)
    if target == Target.CLS:
        return F.softmax(cls_score, dim=-1)[ar, labels]
    head = roi_head.bbox_head
    if bbox_pred is None:
        raise ValueError(f'{type(head).__name__} has no box regression; box '
                         'targets are not available')
    if not head.reg_class_agnostic:
        bbox_pred = bbox_pred.view(len(labels), -1, 4)[ar, labels]
    boxes = get_box_tensor(head.bbox_coder.decode(
        rois[:, 1:], bbox_pred, max_shape=None))
    return box_target(boxes, target)


def roi_target_grads(roi_head, roi_feats: Tensor, rois: Tensor,
                     labels: Tensor, targets: Sequence[Target],
                     create_graph: bool = False) -> Tensor:
    """d target / d roi_feat of every row and target in ONE backward.

    The RoI features are replicated once per target (rows are independent in
    the bbox head), so the backward of the sum of all targets gives every
    row's own gradient.

    Args:
        roi_feats (Tensor): (N, C, ph, pw); with ``create_graph`` the result
            stays differentiable w.r.t. it (and the head's weights).

    Returns:
        Tensor: (N, T, C, ph, pw).
    """
    n, t = roi_feats.shape[0], len(targets)
    with torch.enable_grad():
        src = roi_feats
        if not create_graph or not src.requires_grad:
            src = roi_feats.detach().requires_grad_(True)
        cls_score, bbox_pred = _head_forward(roi_head, src)
        vals = torch.stack([
            roi_target_values(roi_head, cls_score, bbox_pred, rois, labels,
                              tg) for tg in targets
        ])  # (T, N)
        if t == 1:
            (g, ) = torch.autograd.grad(vals.sum(), src,
                                        create_graph=create_graph)
            return g[:, None]
        eye = vals.new_zeros(t, t, n)
        eye[torch.arange(t), torch.arange(t)] = 1
        try:  # one batched backward for all targets
            (g, ) = torch.autograd.grad(vals, src, grad_outputs=eye,
                                        is_grads_batched=True,
                                        retain_graph=True,
                                        create_graph=create_graph)
        except (RuntimeError, NotImplementedError):
            g = torch.stack([
                torch.autograd.grad(vals[i].sum(), src, retain_graph=True,
                                    create_graph=create_graph)[0]
                for i in range(t)
            ])
    return g.transpose(0, 1)


# ---------------------------------------------------------------------------
# maps
# ---------------------------------------------------------------------------
def _level_strides(roi_head) -> List[float]:
    ext = roi_head.bbox_roi_extractor
    return [1.0 / float(layer.spatial_scale) for layer in ext.roi_layers]


def _sigmas(boxes: Tensor, strides: Tensor, smoothing) -> Tensor:
    """Gaussian sigma per row from its box (input pixels) on its level."""
    if parse_smoothing(smoothing).value == 'none' or len(boxes) == 0:
        return boxes.new_zeros(len(boxes))
    wh = (boxes[:, 2:] - boxes[:, :2]).detach().float() / strides[:, None]
    return box_sigmas(wh)


def roi_level_maps(roi_head, feats: Sequence[Tensor], rois: Tensor,
                   grads: Tensor, render, out_size: Sequence[int],
                   boxes: Optional[Tensor] = None, smoothing='gaussian',
                   grad_mode='pos_relu',
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """Maps of every row on the FPN level its RoI was pooled from.

    Args:
        roi_head: a StandardRoIHead-like head (see :func:`check_roi_head`).
        feats (list[Tensor]): FPN levels (B, C, H_l, W_l).
        rois (Tensor): (N, 5) ``(batch_idx, x1, y1, x2, y2)`` input pixels.
        grads (Tensor): (N, T, C, ph, pw) from :func:`roi_target_grads`.
        render (callable): ``render(win (n, T, hp, wp), y0 (n,), x0 (n,),
            stride, level_hw)`` -> ``(part (n, T, R, Cc), r0 (n,), c0 (n,))``:
            the rendered maps of the rows on the rectangle of the output
            grid starting at (r0, c0) (zero elsewhere), e.g.
            :func:`render_windows_on_image`.
        out_size (tuple): (H_o, W_o) of the output grid.
        boxes (Tensor, optional): (N, 4) boxes in input pixels that set the
            smoothing kernel (default: the RoIs).

    Returns:
        Tensor: (N, T, H_o, W_o) raw maps (>= 0 for ``pos_relu``).
    """
    ext = roi_head.bbox_roi_extractor
    num_levels = len(ext.featmap_strides)
    lvls = ext.map_roi_levels(rois, num_levels)
    strides = torch.tensor(_level_strides(roi_head), device=rois.device)
    sig = _sigmas(rois[:, 1:] if boxes is None else boxes, strides[lvls],
                  smoothing)
    img_inds = rois[:, 0].long()
    out = None
    dev = rois.device
    for lvl in range(num_levels):
        sel = torch.nonzero(lvls == lvl).squeeze(1)
        if sel.numel() == 0:
            continue
        feat = feats[lvl]
        for inds, win, y0, x0 in level_window_maps(
                ext.roi_layers[lvl], feat, img_inds[sel], rois[sel, 1:],
                grads[sel], sig[sel], grad_mode, chunk_bytes):
            part, r0, c0 = render(win, y0, x0, float(strides[lvl]),
                                  feat.shape[-2:])
            if out is None:
                out = part.new_zeros(len(rois), part.shape[1],
                                     int(out_size[0]), int(out_size[1]))
            n, t, rr, cc = part.shape
            ys = r0[:, None] + torch.arange(rr, device=dev)[None]
            xs = c0[:, None] + torch.arange(cc, device=dev)[None]
            # in place (autograd records it)
            out[sel[inds][:, None, None], :, ys[:, :, None],
                xs[:, None, :]] = part.permute(0, 2, 3, 1)
    if out is None:
        raise ValueError('no rows to explain')
    return out


def _out_range(lo_cell: Tensor, hi_cell: Tensor, n_cells: int,
               stride: float, pix: float, n_out: int):
    """Output pixels [a, b) whose bilinear sample (pixel centre, border
    clamp) can touch cells [lo_cell, hi_cell) of a level."""
    a = torch.floor((lo_cell.double() - 0.5) * stride / pix - 0.5).long()
    b = torch.ceil((hi_cell.double() + 0.5) * stride / pix + 0.5).long()
    a = torch.where(lo_cell <= 0, torch.zeros_like(a), a).clamp(0, n_out)
    b = torch.where(hi_cell >= n_cells, torch.full_like(b, n_out),
                    b).clamp(0, n_out)
    return a, torch.maximum(b, a + 1).clamp(max=n_out)


def render_windows_on_image(win: Tensor, y0: Tensor, x0: Tensor,
                            stride: float, level_hw: Sequence[int],
                            img_shape: Sequence[int],
                            ori_shape: Sequence[int], scale_factor=None):
    """Render window maps on the original image, only on the rectangle of
    pixels the window can reach; equal to
    :func:`mmdet_odam.core.level_to_image` of the whole level map there and
    zero elsewhere.

    Returns:
        tuple: (part (n, T, R, Cc), r0 (n,), c0 (n,)).
    """
    n, t, hp, wp = win.shape
    h, w = int(level_hw[0]), int(level_hw[1])
    ho, wo = int(ori_shape[0]), int(ori_shape[1])
    if scale_factor is None:
        sy, sx = img_shape[0] / ori_shape[0], img_shape[1] / ori_shape[1]
    else:
        sx, sy = float(scale_factor[0]), float(scale_factor[1])
    ra, rb = _out_range(y0, y0 + hp, h, stride, sy, ho)
    ca, cb = _out_range(x0, x0 + wp, w, stride, sx, wo)
    rr, cc = int((rb - ra).max()), int((cb - ca).max())
    r0 = torch.minimum(ra, torch.full_like(ra, ho - rr))
    c0 = torch.minimum(ca, torch.full_like(ca, wo - cc))
    full = _place_windows(win, y0, x0, (h, w))
    dev = win.device
    ys = ((r0[:, None] + torch.arange(rr, device=dev)[None]).to(win.dtype) +
          0.5) * sy
    xs = ((c0[:, None] + torch.arange(cc, device=dev)[None]).to(win.dtype) +
          0.5) * sx
    gy = 2 * ys / (stride * h) - 1  # (n, R)
    gx = 2 * xs / (stride * w) - 1  # (n, Cc)
    grid = torch.stack([gx[:, None, :].expand(n, rr, cc),
                        gy[:, :, None].expand(n, rr, cc)], -1)
    part = F.grid_sample(full, grid, mode='bilinear', padding_mode='border',
                         align_corners=False)
    return part, r0, c0


def paste_roi_maps(maps: Tensor, boxes: Tensor,
                   out_size: Sequence[int]) -> Tensor:
    """Bilinearly place (N, T, ph, pw) RoI-grid maps into their boxes.

    Args:
        maps (Tensor): (N, T, ph, pw) maps on the RoIAlign grid.
        boxes (Tensor): (N, 4) boxes in output pixels.
        out_size (tuple): (H, W).

    Returns:
        Tensor: (N, T, H, W), zero outside each box.
    """
    n, t = maps.shape[:2]
    h, w = int(out_size[0]), int(out_size[1])
    if n == 0:
        return maps.new_zeros(0, t, h, w)
    dev = maps.device
    b = boxes.detach().to(maps.dtype)
    xs = torch.arange(w, device=dev, dtype=maps.dtype) + 0.5
    ys = torch.arange(h, device=dev, dtype=maps.dtype) + 0.5
    bw = (b[:, 2] - b[:, 0]).clamp(min=1e-6)
    bh = (b[:, 3] - b[:, 1]).clamp(min=1e-6)
    gx = 2 * (xs[None] - b[:, :1]) / bw[:, None] - 1  # (N, W)
    gy = 2 * (ys[None] - b[:, 1:2]) / bh[:, None] - 1  # (N, H)
    grid = torch.stack([gx[:, None, :].expand(n, h, w),
                        gy[:, :, None].expand(n, h, w)], -1)
    out = F.grid_sample(maps, grid, mode='bilinear', padding_mode='border',
                        align_corners=False)
    inside = ((gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None])
    return out * inside[:, None].to(out.dtype)


def roi_candidate_maps(roi_head, feats: Sequence[Tensor], rois: Tensor,
                       labels: Tensor, out_size: Sequence[int] = (50, 50),
                       options: Optional[MapOptions] = None,
                       boxes: Optional[Tensor] = None,
                       pad_shape: Optional[Sequence[int]] = None,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """ODAM maps of many (RoI, class) candidates in one batched pass.

    Used by Odam-NMS and Odam-Train. The map of each row is computed on the
    FPN level its RoI is pooled from and rendered on a grid of ``out_size``
    covering the padded network input.

    Args:
        roi_head: StandardRoIHead-like head (see :func:`check_roi_head`).
        feats (list[Tensor]): FPN levels (B, C, H_l, W_l); the maps are
            differentiable w.r.t. them (through A, and through the gradient
            when ``create_graph``).
        rois (Tensor): (N, 5) ``(batch_idx, x1, y1, x2, y2)`` input pixels.
        labels (Tensor): (N,) class of each row (0-based, no background).
        out_size (tuple): (H_o, W_o).
        options (MapOptions, optional): target, smoothing, grad mode and
            ``create_graph`` (the gradient differentiable w.r.t. feats and
            the head's weights); default ``MapOptions()``.
        boxes (Tensor, optional): (N, 4) input-pixel boxes that set the
            smoothing kernel (default: the RoIs).
        pad_shape (tuple, optional): padded input (H, W) covered by the
            output grid (default: level 0 size times its stride).

    Returns:
        Tensor: (N, H_o, W_o) raw maps (not normalised, >= 0 for
        ``pos_relu``).
    """
    check_roi_head(roi_head)
    opt = MapOptions() if options is None else options
    tg, create_graph = opt.target, opt.create_graph
    n = len(rois)
    ho, wo = int(out_size[0]), int(out_size[1])
    if n == 0:
        return feats[0].new_zeros(0, ho, wo)
    ext = roi_head.bbox_roi_extractor
    feats = list(feats[:ext.num_inputs])
    if pad_shape is None:
        s0 = _level_strides(roi_head)[0]
        pad_shape = (feats[0].shape[-2] * s0, feats[0].shape[-1] * s0)
    with torch.enable_grad():
        roi_feats = ext(feats, rois)
        grads = roi_target_grads(roi_head, roi_feats, rois, labels.long(),
                                 [tg], create_graph=create_graph)

        def render(win, y0, x0, stride, level_hw):
            m = _place_windows(win, y0, x0, level_hw)
            k, t = m.shape[:2]
            part = level_to_padded(m.reshape(k * t, *m.shape[2:]), stride,
                                   pad_shape, (ho, wo)).reshape(k, t, ho, wo)
            zero = torch.zeros(k, dtype=torch.long, device=m.device)
            return part, zero, zero

        out = roi_level_maps(roi_head, feats, rois, grads, render, (ho, wo),
                             boxes, opt.smoothing, opt.grad_mode,
                             chunk_bytes)
    return out[:, 0]


# ---------------------------------------------------------------------------
# prediction with candidate tracking
# ---------------------------------------------------------------------------
def _nms_type(rcnn_test_cfg) -> Optional[str]:
    if rcnn_test_cfg is None:
        return None
    nms = rcnn_test_cfg.get('nms', None)
    return None if nms is None else nms.get('type', 'nms')


def predict_single_with_inds(roi_head, x: Sequence[Tensor], roi: Tensor,
                             cls_score: Tensor, bbox_pred: Optional[Tensor],
                             img_meta: dict, rescale: bool = False,
                             rcnn_test_cfg=None,
                             return_candidates: bool = False):
    """``BBoxHead._predict_by_feat_single`` that also records ``roi_inds``
    (index of the RoI in this image's proposal list) and supports
    ``nms=dict(type='odam_nms', ...)``.

    Returns:
        InstanceData (and, with ``return_candidates``, a dict with
        ``bboxes`` (n, num_classes or 1, 4) decoded (rescaled if
        ``rescale``) and ``scores`` (n, num_classes + 1)).
    """
    head = roi_head.bbox_head
    results = InstanceData()
    num_rois = roi.size(0)
    if num_rois == 0:
        results = empty_instances(
            [img_meta], roi.device, task_type='bbox',
            instance_results=[results], box_type=head.predict_box_type,
            use_box_type=False, num_classes=head.num_classes,
            score_per_cls=rcnn_test_cfg is None)[0]
        results.roi_inds = roi.new_zeros(0, dtype=torch.long)
        cand = dict(bboxes=roi.new_zeros(0, 1, 4),
                    scores=roi.new_zeros(0, head.num_classes + 1))
        return (results, cand) if return_candidates else results
    scores = F.softmax(cls_score, dim=-1)
    img_shape = img_meta['img_shape']
    if bbox_pred is not None:
        ncls = 1 if head.reg_class_agnostic else head.num_classes
        rep = roi.repeat_interleave(ncls, dim=0)
        bbox_pred = bbox_pred.view(-1, head.bbox_coder.encode_size)
        bboxes = head.bbox_coder.decode(rep[..., 1:], bbox_pred,
                                        max_shape=img_shape)
    else:
        bboxes = roi[:, 1:].clone()
        if img_shape is not None and bboxes.size(-1) == 4:
            bboxes[:, [0, 2]].clamp_(min=0, max=img_shape[1])
            bboxes[:, [1, 3]].clamp_(min=0, max=img_shape[0])
    if rescale and bboxes.size(0) > 0:
        scale_factor = [1 / s for s in img_meta['scale_factor']]
        bboxes = scale_boxes(bboxes, scale_factor)
    bboxes = get_box_tensor(bboxes)
    box_dim = bboxes.size(-1)
    bboxes = bboxes.view(num_rois, -1)
    cand = dict(bboxes=bboxes.view(num_rois, -1, box_dim), scores=scores)
    ncls = head.num_classes
    if rcnn_test_cfg is None:
        results.bboxes = bboxes
        results.scores = scores
        results.roi_inds = torch.arange(num_rois, device=roi.device)
    elif _nms_type(rcnn_test_cfg) == 'odam_nms':
        results = _odam_nms_single(roi_head, x, roi, bboxes, scores,
                                   img_meta, rcnn_test_cfg, rescale)
    else:
        det_bboxes, det_labels, inds = multiclass_nms(
            bboxes, scores, rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
            rcnn_test_cfg.max_per_img, box_dim=box_dim, return_inds=True)
        results.bboxes = det_bboxes[:, :-1]
        results.scores = det_bboxes[:, -1]
        results.labels = det_labels
        results.roi_inds = torch.div(inds, ncls, rounding_mode='floor')
    return (results, cand) if return_candidates else results


def _odam_nms_single(roi_head, x, roi, bboxes, scores, img_meta,
                     rcnn_test_cfg, rescale=False) -> InstanceData:
    """Odam-NMS on all (RoI, class) candidates above ``score_thr``."""
    ncls = scores.size(1) - 1
    n = roi.size(0)
    flat = scores[:, :-1].reshape(-1)
    inds = torch.nonzero(flat > rcnn_test_cfg.score_thr).squeeze(1)
    roi_inds = torch.div(inds, ncls, rounding_mode='floor')
    labels = inds % ncls
    boxes = bboxes.view(n, -1, 4)
    boxes = boxes[roi_inds, labels if boxes.size(1) > 1 else 0]
    cand_scores = flat[inds]
    pad = img_meta.get('batch_input_shape', img_meta.get('pad_shape'))
    size = nms_map_size(img_meta['img_shape'])
    boxes_in = boxes
    if rescale:
        sf = img_meta['scale_factor']
        boxes_in = boxes * boxes.new_tensor([sf[0], sf[1], sf[0], sf[1]])
    maps = roi_candidate_maps(roi_head, x, roi[roi_inds], labels, size,
                              boxes=boxes_in, pad_shape=pad).detach()
    results = InstanceData()
    if len(inds) == 0:
        results.bboxes = boxes.new_zeros(0, 4)
        results.scores = boxes.new_zeros(0)
        results.labels = labels
        results.roi_inds = roi_inds
        results.odam_maps = maps.reshape(0, -1)
        return results
    dets, keep = batched_odam_nms(boxes, cand_scores, labels,
                                  maps.reshape(len(inds), -1),
                                  rcnn_test_cfg.nms)
    if rcnn_test_cfg.max_per_img > 0:
        dets = dets[:rcnn_test_cfg.max_per_img]
        keep = keep[:rcnn_test_cfg.max_per_img]
    results.bboxes = dets[:, :4]
    results.scores = dets[:, 4]
    results.labels = labels[keep]
    results.roi_inds = roi_inds[keep]
    results.odam_maps = maps[keep]
    return results


def predict_bbox_with_inds(roi_head, x: Sequence[Tensor],
                           batch_img_metas: List[dict], rpn_results_list,
                           rcnn_test_cfg, rescale: bool = False,
                           return_candidates: bool = False):
    """``StandardRoIHead.predict_bbox`` that records ``roi_inds`` in every
    result (and optionally returns the candidates, see
    :func:`predict_single_with_inds`)."""
    proposals = [res.bboxes for res in rpn_results_list]
    rois = bbox2roi(proposals)
    num = tuple(len(p) for p in proposals)
    if rois.shape[0] == 0:
        res = empty_instances(
            batch_img_metas, rois.device, task_type='bbox',
            box_type=roi_head.bbox_head.predict_box_type,
            num_classes=roi_head.bbox_head.num_classes,
            score_per_cls=rcnn_test_cfg is None)
        for r in res:
            r.roi_inds = rois.new_zeros(0, dtype=torch.long)
        if return_candidates:
            ncls = roi_head.bbox_head.num_classes + 1
            return res, [dict(bboxes=rois.new_zeros(0, 1, 4),
                              scores=rois.new_zeros(0, ncls)) for _ in res]
        return res
    bbox_results = roi_head._bbox_forward(x, rois)
    cls_scores = bbox_results['cls_score'].split(num, 0)
    bbox_preds = bbox_results['bbox_pred']
    bbox_preds = (bbox_preds.split(num, 0) if bbox_preds is not None else
                  (None, ) * len(proposals))
    out, cands = [], []
    for i, roi in enumerate(rois.split(num, 0)):
        r, c = predict_single_with_inds(roi_head, x, roi, cls_scores[i],
                                        bbox_preds[i], batch_img_metas[i],
                                        rescale, rcnn_test_cfg, True)
        out.append(r)
        cands.append(c)
    return (out, cands) if return_candidates else out


# ---------------------------------------------------------------------------
# explainer
# ---------------------------------------------------------------------------
def match_candidates(cand_boxes: Tensor, cand_scores: Tensor, boxes: Tensor,
                     labels=None):
    """Best pre-NMS (RoI, class) candidate of each given box: max IoU of the
    class-specific decoded box (restricted to ``labels`` when given), ties
    (within 1e-6) broken by score.

    Args:
        cand_boxes (Tensor): (R, C or 1, 4) decoded boxes (same pixels as
            ``boxes``).
        cand_scores (Tensor): (R, C + 1) softmax scores.
        boxes (Tensor): (K, 4).
        labels (Tensor, optional): (K,).

    Returns:
        tuple: roi_inds (K,), labels (K,).
    """
    r, nb = cand_boxes.shape[:2]
    ncls = cand_scores.shape[1] - 1
    if labels is not None:
        lab = torch.as_tensor(labels).long().reshape(-1)
        if bool(((lab < 0) | (lab >= ncls)).any()):
            raise ValueError(f'labels must be in [0, {ncls}), got '
                             f'{lab.tolist()}')
    cb = cand_boxes.expand(r, ncls, 4) if nb == 1 else cand_boxes
    cand_labels = torch.arange(ncls, device=cb.device).repeat(r)
    idx = match_boxes(cb.reshape(-1, 4), cand_scores[:, :ncls].reshape(-1),
                      cand_labels, boxes, labels)
    return torch.div(idx, ncls, rounding_mode='floor'), idx % ncls


@EXPLAINERS.register_module(name='odam_two_stage')
class TwoStageExplainer(BaseExplainer):
    """Batched ODAM for Faster R-CNN-like detectors (see module doc).

    Works on a plain mmdet ``TwoStageDetector`` whose ``roi_head`` is a
    ``StandardRoIHead`` (or subclass) with one bbox head on RoIAlign; the
    detections are exactly those of ``model.predict``. ``layer``:
    ``None``/``'fpn_level'`` (default), ``'roi'``, or any module name (exact
    autograd path of :class:`GenericExplainer`).

    Extra args:
        chunk_bytes (int): memory budget of one chunk of level-window
            gradients (default 256 MiB).
    """

    def __init__(self, model, *args, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 **kwargs):
        super().__init__(model, *args, **kwargs)
        if not hasattr(model, 'roi_head') or not hasattr(model, 'rpn_head'):
            raise ValueError(f'{type(model).__name__} is not a two-stage '
                             'detector (no rpn_head/roi_head); use '
                             'GenericExplainer')
        self.chunk_bytes = int(chunk_bytes)
        self.fallback = None
        support = probe_two_stage_detector(model)
        if not support.ok:
            reason = '; '.join(support.reasons)
            if self.layer in ROI_ALIASES:
                raise ValueError(f"layer='roi' needs the batched two-stage "
                                 f'path: {reason}')
            self.fallback = reason
            print_log(f'{reason}; using the exact autograd path', 'current',
                      logging.WARNING)

    adapter = 'two_stage'

    def plan(self):
        name = self.layer_name
        if self.fallback or name not in (FPN_LEVEL, ROI):
            why = ([f'two_stage adapter: {self.fallback}']
                   if self.fallback else [f'layer {name!r}: autograd'])
            layer = name if name not in (FPN_LEVEL, ROI) else (
                'neck' if getattr(self.model, 'neck', None) is not None
                else 'backbone')
            return 'autograd', True, layer, why
        if name == ROI:
            return 'roi_features', True, ROI, ()
        return 'roi_adjoint', True, FPN_LEVEL, ()

    def check_layer(self, layer):
        if layer is None or layer == FPN_LEVEL or layer in ROI_ALIASES:
            return layer
        try:
            return super().check_layer(layer)
        except ValueError as e:
            raise ValueError(f"{e}; two-stage names: '{FPN_LEVEL}' (default)"
                             f", '{ROI}'") from None

    @property
    def layer_name(self) -> str:
        if self.layer is None or self.layer == FPN_LEVEL:
            return FPN_LEVEL
        return ROI if self.layer in ROI_ALIASES else self.layer

    def _explain(self, inputs, data_samples, hooks, score_thr, topk, boxes,
                 labels) -> List[Explanation]:
        if self.layer_name not in (FPN_LEVEL, ROI) or self.fallback:
            from .generic import GenericExplainer
            gen = GenericExplainer(
                self.model, targets=self.targets,
                layer=None if self.layer == FPN_LEVEL else self.layer,
                smoothing=self.smoothing, grad_mode=self.grad_mode,
                chunk_size=self.chunk_size, exact=True)
            return gen._explain(inputs, data_samples, hooks, score_thr, topk,
                                boxes, labels)
        model = self.model
        roi_head = model.roi_head
        metas = [ds.metainfo for ds in data_samples]
        with torch.no_grad():
            x = model.extract_feat(inputs)
            if data_samples[0].get('proposals', None) is None:
                rpn = model.rpn_head.predict(x, data_samples, rescale=False)
            else:
                rpn = [ds.proposals for ds in data_samples]
            results, cands = predict_bbox_with_inds(
                roi_head, x, metas, rpn, roi_head.test_cfg, rescale=True,
                return_candidates=True)
        out = []
        for i, meta in enumerate(metas):
            res, cand = results[i], cands[i]
            props = get_box_tensor(rpn[i].bboxes)
            given = None if boxes is None else boxes[i]
            if given is not None:
                gb = check_boxes(given, meta['ori_shape'], props.device)
                lab = None if labels is None else labels[i]
                roi_inds, labs = match_candidates(cand['bboxes'],
                                                  cand['scores'], gb, lab)
                det_boxes = gb
                det_scores = cand['scores'][roi_inds, labs]
            else:
                keep = top_scoring(res.scores, score_thr, topk)
                roi_inds, labs = res.roi_inds[keep], res.labels[keep]
                det_boxes, det_scores = res.bboxes[keep], res.scores[keep]
            expl_kw = dict(img_path=meta.get('img_path'),
                           layer=self.layer_name, method=self.method)
            if len(roi_inds) == 0:
                out.append(Explanation.empty(self.targets, meta['ori_shape'],
                                             **expl_kw))
                continue
            raw = self.explain_rows(x, i, meta, props[roi_inds], labs,
                                    det_boxes)
            if given is None:
                raw = self.zero_clipped(raw, det_boxes, meta)
            out.append(Explanation(
                bboxes=det_boxes.detach().cpu(),
                scores=det_scores.detach().cpu(),
                labels=labs.detach().cpu(),
                candidate_inds=roi_inds.detach().cpu(),
                maps={k: v.cpu()
                      for k, v in self.finalize_maps(raw).items()},
                ori_shape=tuple(int(v) for v in meta['ori_shape'][:2]),
                level_ids=(roi_head.bbox_roi_extractor.map_roi_levels(
                    bbox2roi([props[roi_inds]]),
                    len(roi_head.bbox_roi_extractor.featmap_strides)).cpu()
                    if self.layer_name == FPN_LEVEL else None),
                **expl_kw))
        return out

    def explain_rows(self, x: Sequence[Tensor], img_idx: int, meta: dict,
                     roi_boxes: Tensor, labels: Tensor,
                     det_boxes: Tensor) -> Dict[Target, Tensor]:
        """Raw maps of given (RoI, label) rows of one image.

        Args:
            x (list[Tensor]): FPN levels of the batch.
            img_idx (int): image in the batch.
            meta (dict): its metainfo.
            roi_boxes (Tensor): (K, 4) RoI boxes (input pixels).
            labels (Tensor): (K,) classes.
            det_boxes (Tensor): (K, 4) detection boxes (original pixels);
                they set the smoothing kernel.

        Returns:
            dict: scalar target -> (K, H_ori, W_ori) raw maps.
        """
        roi_head = self.model.roi_head
        ext = roi_head.bbox_roi_extractor
        feats = [f[img_idx:img_idx + 1].detach()
                 for f in x[:ext.num_inputs]]
        rois = bbox2roi([roi_boxes])
        tgs = self.scalar_targets
        ori = tuple(int(v) for v in meta['ori_shape'][:2])
        sf = meta.get('scale_factor', None)
        if sf is None:  # (w_scale, h_scale) as mmdet
            sf = (meta['img_shape'][1] / ori[1], meta['img_shape'][0] / ori[0])
        with torch.no_grad():
            roi_feats = ext(feats, rois)
        grads = roi_target_grads(roi_head, roi_feats, rois, labels, tgs)
        with torch.no_grad():
            if self.layer_name == ROI:
                m = apply_grad_mode((grads * roi_feats[:, None]).sum(2),
                                    self.grad_mode)
                boxes_ori = roi_boxes / roi_boxes.new_tensor(
                    [sf[0], sf[1], sf[0], sf[1]])
                maps = paste_roi_maps(m, boxes_ori, ori)
            else:
                boxes_in = det_boxes * det_boxes.new_tensor(
                    [sf[0], sf[1], sf[0], sf[1]])

                def render(win, y0, x0, stride, level_hw):
                    return render_windows_on_image(
                        win, y0, x0, stride, level_hw, meta['img_shape'],
                        ori, sf)

                maps = roi_level_maps(roi_head, feats, rois, grads, render,
                                      ori, boxes_in, self.smoothing,
                                      self.grad_mode, self.chunk_bytes)
        return {tg: maps[:, j] for j, tg in enumerate(tgs)}
