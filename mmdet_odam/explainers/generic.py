"""Exact ODAM for any mmdet detector by autograd (DETR/DINO, YOLOX, RTMDet,
Cascade R-CNN, ...), also the reference of the batched paths.

The detector's own ``predict`` runs with gradients enabled while a temporary
forward hook replaces the chosen layer's output by leaf tensors that require
grad. Each detection's target (its reported score, or a signed coordinate of
its reported box) stays differentiable through mmdet's indexing; mmdet's
``select_single_mlvl(..., detach=True)`` (dense heads' ``predict_by_feat``)
is switched to ``detach=False`` for the call. Gradients of all detections
come from chunked ``torch.autograd.grad(..., is_grads_batched=True)`` (one
row per detection and target; falls back to one backward per row for ops
without a vmap rule, e.g. mmcv's RoIAlign or deformable attention).

Layer: ``None`` = for DETR-family detectors (a transformer ``encoder`` fed
with the flattened neck levels) the encoder's output memory, each level's
tokens put back on that level's grid (B, C, h_l, w_l), so the backward runs
through the decoder and the head only; else the neck outputs (all levels)
or, without a neck, the last backbone output. Any module name: all tensors
it outputs (token outputs (B, N, C) that tile the neck's levels are put back
on the levels the same way). The map of a
detection is f(sum_c Phi(G)_c * A_c) on every level of the layer, each
rendered on the original image and **summed** over levels (as the dense
explainer does for multi-level layers; a level the target does not depend on
contributes 0). Box targets use the reported (possibly clipped) box, in
network-input pixels: a coordinate clipped to the image border has a zero
gradient.
"""
import math
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core import (apply_grad_mode, as_leaves, box_sigmas, box_wh_in_cells,
                    check_boxes, gaussian_smooth, group_tensors,
                    level_to_image, match_boxes, odam_raw, only_through,
                    row_grads, singular_nodes_zeroed, split_by_owner,
                    staged_row_grads, tokens_as_level_leaves, top_scoring)
from ..core.windows import Windows, windowed_odam_raw
from .base import BaseExplainer, resolve_module
from .builder import EXPLAINERS
from .second_stages import (log_declined, plan_note, record_inputs,
                            second_stages, stage_taken)
from .results import Explanation
from .targets import (BOX_COORDS, Target, box_target, parse_grad_mode,
                      parse_smoothing)

#: A rendered-level piece: (rows (n,), stride (sy, sx), maps (n, h, w)).
Piece = Tuple[Tensor, Tuple[float, float], Tensor]


def infer_stride(pad: int, size: int) -> float:
    """Stride of a level of ``size`` cells over ``pad`` input pixels: the
    power of two ``s`` with ``ceil(pad / s) == size`` if any, else
    ``pad / size``."""
    for k in range(0, 9):
        if math.ceil(pad / 2**k) == size:
            return float(2**k)
    return float(pad) / float(size)


def finite_grad(g: Tensor, layer_name: str) -> Tensor:
    """``g``, checked finite (raises ``ValueError`` otherwise)."""
    if not torch.isfinite(g).all():
        raise ValueError(f'the gradient of a target w.r.t. layer '
                         f'{layer_name!r} is not finite')
    return g


def autograd_maps(ys: Tensor, leaves: Sequence[Tensor], img_inds: Tensor,
                  pad_shape: Sequence[int], boxes: Optional[Tensor] = None,
                  smoothing='gaussian', grad_mode='pos_relu',
                  chunk_size: int = 16,
                  strides: Optional[Sequence[Tuple[float, float]]] = None,
                  layer_name: str = 'layer',
                  groups: Optional[Sequence[Sequence[Tensor]]] = None,
                  owners: Optional[Tensor] = None,
                  local: Optional[dict] = None) -> List[Piece]:
    """Exact ODAM maps of many scalar targets by chunked batched autograd.

    Args:
        ys (Tensor): (N,) scalar targets, differentiable w.r.t. ``leaves``
            (the graph is retained).
        leaves (list[Tensor]): feature maps (B, C, h_l, w_l) that require
            grad (e.g. a layer's outputs replaced by leaves in a hook).
        img_inds (Tensor): (N,) image of each target in the batch.
        pad_shape (tuple): (H, W) padded network input.
        boxes (Tensor, optional): (N, 4) boxes in input pixels that set the
            Gaussian kernel (needed for ``smoothing='gaussian'``).
        smoothing, grad_mode: see :mod:`mmdet_odam.explainers.targets`.
        chunk_size (int): targets per batched backward (memory bound:
            chunk_size x sum of leaf sizes).
        strides (list, optional): (sy, sx) per leaf; default
            :func:`infer_stride` from ``pad_shape``.
        layer_name (str): for error messages.
        groups (list[list[Tensor]], optional): intermediate tensors every
            path from ``ys`` to the leaves passes through, grouped (a dense
            head's outputs, one group per level): the gradients are taken
            in two stages (:func:`~mmdet_odam.core.staged_row_grads`), so
            a target's backward runs only the groups it depends on. Taken
            only with two groups or more and where
            :func:`~mmdet_odam.core.only_through` confirms it.
        owners (Tensor, optional): (N,) the detection each target belongs
            to: with ``groups``, the first stage is one backward per
            target split by detection
            (:func:`~mmdet_odam.core.split_by_owner`) where the
            detections' elements of the groups are found disjoint, else
            one backward per row.
        local (dict, optional): with ``groups``, ``{group index: second
            stage}`` taken without autograd over whole levels where it
            fits (:class:`~mmdet_odam.core.CroppedLevel` on crops,
            :class:`~mmdet_odam.explainers.roi_stages.RoiStage` by
            RoIAlign's adjoint; see
            :func:`~mmdet_odam.core.staged_row_grads`); one group is then
            enough for two stages.

    Returns:
        list[Piece]: ``(rows, (sy, sx), maps (n, h_l, w_l))`` raw maps per
        chunk and leaf (render with :func:`level_to_image` and sum).

    Raises:
        ValueError: if no target depends on any leaf.
    """
    smoothing = parse_smoothing(smoothing).value
    grad_mode = parse_grad_mode(grad_mode)
    if smoothing == 'gaussian' and boxes is None:
        raise ValueError("smoothing='gaussian' needs the boxes")
    if ys.dim() != 1:
        raise ValueError(f'ys must be 1-D, got shape {tuple(ys.shape)}')
    if not ys.requires_grad:
        raise ValueError('the targets do not depend on the explained layer '
                         f'{layer_name!r} (no autograd graph)')
    if strides is None:
        strides = [(infer_stride(pad_shape[0], lf.shape[-2]),
                    infer_stride(pad_shape[1], lf.shape[-1]))
                   for lf in leaves]
    if groups is not None and ((len(groups) < 2 and not local) or
                               not only_through(
                                   ys, [t for g in groups for t in g],
                                   leaves)):
        groups = None  # one group: the first stage would only add cost
    state: dict = {'local': dict(local or {})}
    if groups and owners is not None:  # probes before the NaN hooks
        state['owned'] = split_by_owner(ys, owners, group_tensors(groups))
    if groups and state.get('owned') is None and state['local'] and all(
            getattr(s, 'needs_split', False) for s in state['local'].values()):
        groups = None  # per-row stages through every group cost more
    # the rows of one detection in one chunk: they share their crops
    order = torch.arange(len(ys), device=ys.device) if owners is None \
        else torch.argsort(owners.to(ys.device), stable=True)
    with singular_nodes_zeroed(ys):
        pieces, used = _chunked_pieces(ys, leaves, img_inds, boxes, strides,
                                       smoothing, grad_mode, chunk_size,
                                       layer_name, groups, state, order)
    if not used and ys.shape[0] > 0:
        raise ValueError(f'The detections do not depend on layer '
                         f'{layer_name!r} (no gradient reaches it)')
    return pieces


def _chunked_pieces(ys, leaves, img_inds, boxes, strides, smoothing,
                    grad_mode, chunk_size, layer_name, groups, state, order):
    """Raw map pieces of ``ys`` by chunks of rows taken in ``order`` (see
    :func:`autograd_maps`), and whether any target reached a leaf."""
    pieces: List[Piece] = []
    used = False
    for s in range(0, ys.shape[0], int(chunk_size)):
        rows = order[s:s + int(chunk_size)]
        if groups:
            gs = staged_row_grads(ys, leaves, groups, rows, state)
        else:
            gs = row_grads(ys, leaves, rows, state)
        for k, g in enumerate(gs):
            if g is None or leaves[k].dim() != 4:
                continue
            used = True
            st = strides[k]
            sigmas = None
            if smoothing == 'gaussian':
                wh = box_wh_in_cells(boxes[rows].detach().float(), st)
                wh = torch.nan_to_num(wh, nan=0.0, posinf=1e4, neginf=0.0)
                sigmas = box_sigmas(wh)
            if isinstance(g, list):  # windows (their sum)
                sel, raw = _windows_raw(g, leaves[k], img_inds[rows], sigmas,
                                        layer_name)
                sel = rows[sel]
            else:
                g = finite_grad(g[torch.arange(len(rows), device=g.device),
                                  img_inds[rows]], layer_name)
                if sigmas is not None:
                    g = gaussian_smooth(g, sigmas)
                sel, raw = rows, odam_raw(
                    g, leaves[k].detach()[img_inds[rows]])
            pieces.append((sel, st, apply_grad_mode(raw, grad_mode).detach()))
    return pieces, used


def _windows_raw(parts: Sequence[Windows], leaf: Tensor, img_inds: Tensor,
                 sigmas: Optional[Tensor], layer_name: str):
    """Raw maps of a sum of windowed gradients of a chunk's rows (each
    row's own image ``img_inds`` only, as the dense path takes it):
    ``(rows (m,) among the chunk's, maps (m, h, w))``."""
    n = len(img_inds)
    total = None
    for g in parts:
        finite_grad(g.values, layer_name)
        own = (g.img == img_inds[g.rows].to(g.img.device)).to(g.values.dtype)
        win = Windows(g.img, g.y0, g.x0, g.values * own[:, None, None, None],
                      g.shape)
        raw = windowed_odam_raw(win, leaf.detach(), None if sigmas is None
                                else sigmas[g.rows])
        if total is None:
            total = raw.new_zeros(n, *raw.shape[1:])
            hit = torch.zeros(n, dtype=torch.bool, device=raw.device)
        total.index_add_(0, g.rows, raw)
        hit[g.rows] = True
    sel = hit.nonzero().squeeze(1)
    return sel, total[sel]


def same_box_owners(bboxes: Tensor) -> Tensor:
    """(k,) owner of each detection for
    :func:`~mmdet_odam.core.split_by_owner`: detections with identical
    boxes (the classes of one candidate) share one; the split verifies
    that the owners' elements are disjoint."""
    same = (bboxes[:, None] == bboxes[None]).all(-1)
    first = same.float().argmax(1)  # the first detection with this box
    return torch.unique(first, return_inverse=True)[1]


def render_pieces(pieces: Sequence[Piece], n: int, meta: dict) -> Tensor:
    """Sum pieces into (n, H_ori, W_ori) maps of one image."""
    h, w = (int(v) for v in meta['ori_shape'][:2])
    out = None
    for rows, stride, maps in pieces:
        r = level_to_image(maps, stride, meta['img_shape'][:2], (h, w),
                           meta.get('scale_factor'))
        if out is None:
            out = r.new_zeros(n, h, w)
        out.index_add_(0, rows, r)  # in place: pieces are detached
    return out if out is not None else torch.zeros(n, h, w)


@contextmanager
def keep_head_grads(enabled: bool = True):
    """Make mmdet's ``select_single_mlvl`` keep gradients during the block
    (dense heads' ``predict_by_feat`` detach per-image outputs). Not for
    two-stage detectors, whose RPN proposals are detached by design."""
    import sys
    if not enabled:
        yield
        return

    from mmdet.models.utils import misc
    orig = misc.select_single_mlvl

    def no_detach(mlvl_tensors, batch_id, detach=True):
        return orig(mlvl_tensors, batch_id, detach=False)

    patched = []
    for name, mod in list(sys.modules.items()):
        if name.startswith('mmdet') and mod is not None and getattr(
                mod, 'select_single_mlvl', None) is orig:
            setattr(mod, 'select_single_mlvl', no_detach)
            patched.append(mod)
    try:
        yield
    finally:
        for mod in patched:
            setattr(mod, 'select_single_mlvl', orig)


@contextmanager
def keep_stage_grads(model):
    """Keep the gradient of query-based RoI heads' refined boxes for the
    block (Sparse R-CNN, QueryInst: ``_bbox_forward`` returns its boxes as
    ``detached_proposals``, which become the reported detections).

    The refined boxes of every stage are returned undetached; the next
    stage only pools RoIs at them (RoIAlign has no gradient w.r.t. box
    coordinates), so the final boxes depend on the features through the
    final stage and the object features, as in the forward. An instance
    attribute wraps the method for the block and is removed after it."""
    roi_head = getattr(model, 'roi_head', None)
    orig = getattr(roi_head, '_bbox_forward', None)
    if orig is None:
        yield
        return

    def undetached(*args, **kwargs):
        res = orig(*args, **kwargs)
        if isinstance(res, dict) and 'detached_proposals' in res and \
                'decoded_bboxes' in res:
            sizes = [len(p) for p in res['detached_proposals']]
            res['detached_proposals'] = list(
                res['decoded_bboxes'].split(sizes, 0))
        return res

    roi_head._bbox_forward = undetached
    try:
        yield
    finally:
        del roi_head._bbox_forward


def target_values(bboxes: Tensor, scores: Tensor, target: Target,
                  scale_factor=(1.0, 1.0)) -> Tensor:
    """Scalar targets from reported results: score, or signed coordinate of
    the box in network-input pixels (``bboxes`` in original pixels)."""
    if target == Target.CLS:
        return scores
    s = float(scale_factor[BOX_COORDS[target][0] % 2])
    return s * box_target(bboxes, target)


@EXPLAINERS.register_module(name='odam_generic')
class GenericExplainer(BaseExplainer):
    """Exact ODAM for any mmdet detector (see module doc).

    Given boxes are matched to the best of the detector's *reported*
    detections (all of them, before ``score_thr``/``topk``): the generic
    path has no access to a family's pre-NMS candidates.
    """

    mirrors_predict = False  # its detections are predict's own
    #: how the last call took its second stage: ``'autograd'``, ``'crops'``
    #: (levels proved local) or ``'roi_adjoint'`` (RoI extractors)
    second_stage: Optional[str] = None
    adapter = 'generic'
    supports_mask_target = True
    #: take a dense head's gradients in two stages (through its per-level
    #: outputs, so a detection's backward runs its own level only) where
    #: the graph allows it; ``False`` gives the plain one-stage oracle
    staged_grads = True
    #: take the second stage of a dense head's levels proved local on
    #: crops around the detections (``False``: the full-map backward)
    cropped_grads = True

    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        if Target.MASK in self.targets and self._mask_head() is None:
            raise ValueError(
                f"target 'mask' needs a detector with a RoI mask head "
                f'(Mask R-CNN, Cascade Mask R-CNN...); '
                f'{type(model).__name__} has none')

    def _mask_head(self):
        roi_head = getattr(self.model, 'roi_head', None)
        head = getattr(roi_head, 'mask_head', None)
        return head if isinstance(head, torch.nn.Module) else None

    def plan(self):
        from ..adapters import resolve
        declined = [f'{name} adapter: {"; ".join(r)}'
                    for name, r in resolve(self.model).declined]
        return ('autograd', True, self.layer or self.default_layer(),
                declined + [self.second_stage_plan()])

    def second_stage_plan(self) -> str:
        """What the second stage (head outputs -> layer) will be, judged
        from the modules; the call proves or declines it."""
        return plan_note(self.model, self.layer in (None,
                                                    self.default_layer()),
                         self._token_encoder() is not None)

    def default_layer(self) -> str:
        """``'encoder'`` for DETR-family detectors (its output memory,
        mapped back to the neck's levels), else ``'neck'``, else
        ``'backbone'``."""
        if self._token_encoder() is not None:
            return 'encoder'
        neck = getattr(self.model, 'neck', None)
        return 'neck' if neck is not None else 'backbone'

    def _token_encoder(self):
        """The transformer encoder of a DETR-family detector (flattened
        neck levels in, memory tokens (B, N, C) out), or None."""
        model = self.model
        enc = getattr(model, 'encoder', None)
        if isinstance(enc, torch.nn.Module) and callable(
                getattr(model, 'forward_encoder', None)) and getattr(
                    model, 'neck', None) is not None:
            return enc
        return None

    def _layer_hook(self, store: List[List[Tensor]], level_shapes: list):
        """Forward hook that replaces the layer's output by leaves; token
        outputs (B, N, C) that tile the neck's levels become per-level
        (B, C, h, w) leaves."""
        def hook(mod, inp, out):
            if isinstance(out, Tensor) and out.dim() == 3 and level_shapes \
                    and sum(h * w for h, w in level_shapes) == out.shape[1]:
                new, leaves = tokens_as_level_leaves(out, level_shapes)
            else:
                new, leaves = as_leaves(out)
            store.append(leaves)
            return new
        return hook

    def _explain(self, inputs, data_samples, hooks, score_thr, topk, boxes,
                 labels) -> List[Explanation]:
        model = self.model
        name = self.layer or self.default_layer()
        module = resolve_module(model, name)
        last_only = self.layer is None and name == 'backbone'
        store: List[List[Tensor]] = []
        level_shapes: list = []
        neck = getattr(model, 'neck', None)
        if neck is not None and module is not neck:
            def shapes(mod, inp, out):
                level_shapes[:] = [tuple(o.shape[-2:]) for o in (
                    out if isinstance(out, (list, tuple)) else [out])]
            hooks.forward(neck, shapes)
        hooks.forward(module, self._layer_hook(store, level_shapes))
        mask_logits: List[Tensor] = []
        if Target.MASK in self.scalar_targets:
            hooks.forward(self._mask_head(),
                          lambda mod, inp, out: mask_logits.append(out))
        two_stage = getattr(model, 'rpn_head', None) is not None
        rec = record_inputs(model, hooks) if self.staged_grads else \
            {'head': [], 'roi': []}
        with torch.enable_grad(), keep_head_grads(not two_stage), \
                keep_stage_grads(model):
            # shallow copies: predict writes pred_instances into them
            results = model.predict(inputs, [s.new() for s in data_samples],
                                    rescale=True)
        hooks.remove()
        if not store:
            raise ValueError(f'Layer {name!r} is not called by '
                             f'{type(model).__name__}.predict; the detections '
                             'do not depend on it')
        leaves = [lf for call in store for lf in call]
        if last_only:
            leaves = leaves[-1:]
        groups, local = second_stages(model, rec, leaves, self.cropped_grads)
        self.second_stage = 'autograd'
        pad = tuple(int(v) for v in data_samples[0].metainfo.get(
            'batch_input_shape', inputs.shape[-2:]))
        out = []
        for i, res in enumerate(results):
            meta = res.metainfo
            inst = res.pred_instances
            sf = meta.get('scale_factor', None)
            if sf is None:  # (w_scale, h_scale) as mmdet
                sf = (meta['img_shape'][1] / meta['ori_shape'][1],
                      meta['img_shape'][0] / meta['ori_shape'][0])
            if boxes is not None:
                gb = check_boxes(boxes[i], meta['ori_shape'],
                                 inst.bboxes.device)
                lab = None if labels is None else labels[i]
                keep = match_boxes(inst.bboxes.detach(),
                                   inst.scores.detach(), inst.labels, gb, lab)
                shown = gb
            else:
                keep = top_scoring(inst.scores.detach(), score_thr, topk)
                shown = inst.bboxes[keep].detach()
            kw = dict(img_path=meta.get('img_path'), layer=name,
                      method=self.method)
            if len(keep) == 0:
                out.append(Explanation.empty(self.targets, meta['ori_shape'],
                                             **kw))
                continue
            mask_y = None if not mask_logits else self._mask_targets(
                mask_logits, results, i, keep, inst.labels[keep])
            raw = self._maps(inst, keep, i, leaves, pad, meta, sf, shown,
                             name, mask_y, groups, local)
            self.second_stage = stage_taken(local) or self.second_stage
            out.append(Explanation(
                bboxes=shown.cpu(), scores=inst.scores[keep].detach().cpu(),
                labels=inst.labels[keep].detach().cpu(),
                candidate_inds=keep.detach().cpu(),
                maps={k: v.cpu() for k, v in self.finalize_maps(raw).items()},
                ori_shape=tuple(int(v) for v in meta['ori_shape'][:2]), **kw))
        log_declined(local)
        return out

    def _mask_targets(self, mask_logits: List[Tensor], results, img_idx,
                      keep: Tensor, labels: Tensor) -> Tensor:
        """(K,) sum of each kept detection's mask logits inside its own
        predicted mask (logit above the binarisation threshold), from the
        mask head's output (R, C, h, w) of all detections of the batch."""
        if len(mask_logits) != 1:
            raise ValueError(
                f"target 'mask': the mask head ran {len(mask_logits)} times "
                'in predict (cascade / test-time augmentation); one call is '
                'supported')
        logits = mask_logits[0]
        counts = [len(r.pred_instances) for r in results]
        if logits.shape[0] != sum(counts):
            raise ValueError(f"target 'mask': {logits.shape[0]} mask rows "
                             f'for {sum(counts)} detections')
        if not logits.requires_grad:
            raise ValueError("target 'mask': the mask logits do not depend "
                             'on the explained layer')
        rows = sum(counts[:img_idx]) + keep.to(logits.device)
        cls = labels.to(logits.device) if logits.shape[1] > 1 else \
            torch.zeros_like(labels).to(logits.device)
        m = logits[rows, cls]  # (K, h, w)
        cfg = getattr(self.model.roi_head, 'test_cfg', None) or {}
        thr = float(cfg.get('mask_thr_binary', 0.5))
        cut = math.log(thr / (1 - thr)) if 0 < thr < 1 else 0.0
        return (m * (m > cut).detach()).sum((1, 2))

    def _maps(self, inst, keep, img_idx, leaves, pad, meta, sf, shown,
              name, mask_y=None, groups=None,
              local=None) -> Dict[Target, Tensor]:
        k = len(keep)
        ys = []
        for tg in self.scalar_targets:
            if tg == Target.MASK:
                ys.append(mask_y)
                continue
            src = inst.scores if tg == Target.CLS else inst.bboxes
            if not src.requires_grad:
                what = 'scores' if tg == Target.CLS else 'box coordinates'
                raise ValueError(
                    f'{type(self.model).__name__}.predict returns {what} '
                    f'without a gradient to layer {name!r}; the detections '
                    'do not depend on it (or this family detaches them)')
            ys.append(target_values(inst.bboxes[keep], inst.scores[keep], tg,
                                    sf))
        ys = torch.cat(ys)
        t = len(self.scalar_targets)
        sb = shown.to(ys.device) * shown.new_tensor(
            [sf[0], sf[1], sf[0], sf[1]]).to(ys.device)
        img_inds = torch.full((len(ys), ), img_idx, dtype=torch.long,
                              device=ys.device)
        pieces = autograd_maps(ys, leaves, img_inds, pad, sb.repeat(t, 1),
                               self.smoothing, self.grad_mode,
                               self.chunk_size, layer_name=name,
                               groups=groups, local=local,
                               owners=same_box_owners(
                                   inst.bboxes[keep].detach()).repeat(t))
        maps = render_pieces(pieces, k * t, meta)
        return {tg: maps[j * k:(j + 1) * k]
                for j, tg in enumerate(self.scalar_targets)}
