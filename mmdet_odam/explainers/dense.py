"""ODAM for dense (one-stage) heads: candidate tracking, the batched
"reversed head" patch path and the exact autograd path.

Patch path (paper App. A.1, "reversed head"): the score of a candidate at cell
(y, x) of FPN level l depends only on a (2R+1)^2 window of that level's map,
R = receptive radius of the head's conv stack (tower convs + prediction conv).
For N candidates we gather their windows from the zero-padded level map and
re-run the head's per-level forward on the batch of windows (one batch
element per candidate), so a single backward of the summed targets gives
every candidate's own gradient. To reproduce the full-map forward exactly:

* after every tower layer, positions outside the real map are zeroed
  (the original forward zero-pads at the map border);
* GroupNorm uses the mean / variance of the ORIGINAL full-map forward
  (captured by :func:`head_forward_with_stats`), frozen. The forward value is
  then exact; the gradient keeps gamma / sigma but drops GroupNorm's mean /
  variance Jacobian terms (which are non-local). The authors' code also drops
  1 / sigma. This error is measured in the tests and in
  docs/benchmarks_explain_gn.md. The explainer therefore uses an exact
  autograd path on GN heads (``path='auto'``, the default); Odam-NMS and Odam-Train call
  :func:`dense_candidate_maps`, which always takes the patch path.

Candidate indices: ``level_ids`` = FPN level, ``loc_inds`` = flat prior
index within the level (``cell * num_base_priors + anchor``, the order mmdet
flattens priors in; equal to the cell index ``y * W_l + x`` for one-prior
heads such as FCOS and ATSS), ``cand_inds`` = index in the concatenated
pre-NMS candidate list.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..core import (Candidates, apply_grad_mode, as_leaves, box_sigmas, box_wh_in_cells,
                    check_boxes, gather_patches, gaussian_smooth,
                    level_to_padded, match_boxes, max_kernel_radius, odam_raw,
                    paste_patches, render_local, row_grads, top_scoring)
from ..core.smoothing import MAX_SIGMA
from ..adapters.dense import (has_group_norm, layer_radius, level_call_args,
                              patch_path_support, probe_dense_detector,
                              receptive_radius, supports_patch_path,
                              tower_layers)
from ..nms.odam_nms import batched_odam_nms, nms_map_size
from ..paths import (conv_radius, layer_record, level_tower_grads,
                     scalar_grads, tower_costs, tower_supported)
from .base import BaseExplainer, HookList, resolve_module
from .builder import EXPLAINERS
from .results import Explanation
from .reversed_head import (forward_recording, reversed_head_maps,
                            reversed_head_spec)
from .targets import (BOX_TARGETS, ExplainPath, MapOptions, Target,
                      box_target, parse_grad_mode, parse_smoothing)


def _num_priors(head) -> int:
    return int(getattr(head, 'num_base_priors', 1))


def _level_strides(head) -> List[Tuple[float, float]]:
    out = []
    for s in head.prior_generator.strides:
        s = s if isinstance(s, (tuple, list)) else (s, s)
        out.append((float(s[1]), float(s[0])))  # (sy, sx)
    return out


def head_forward_with_stats(head: nn.Module, feats: Sequence[Tensor]):
    """Run ``head`` level by level and capture GroupNorm statistics.

    Returns:
        tuple: ``outs`` (same as ``head(feats)``) and ``stats``: dict
        ``(id(gn_module), level) -> (mean (B, G), var (B, G))``.
    """
    gns = [m for layer in tower_layers(head) for m in layer.modules()
           if isinstance(m, nn.GroupNorm)]
    stats: Dict = {}
    cur = {'level': 0}

    def hook(mod, inp, out):
        x = inp[0].detach()
        xr = x.reshape(x.shape[0], mod.num_groups, -1)
        stats[(id(mod), cur['level'])] = (xr.mean(-1),
                                          xr.var(-1, unbiased=False))

    hooks = HookList()
    try:
        for m in gns:
            hooks.forward(m, hook)
        per_level = []
        for lvl, f in enumerate(feats):
            cur['level'] = lvl
            per_level.append(head.forward_single(f,
                                                 *level_call_args(head, lvl)))
    finally:
        hooks.remove()
    outs = tuple(list(o) for o in zip(*per_level))
    return outs, stats


def _ensure_norm_stats(head: nn.Module, feats: Sequence[Tensor],
                       norm_stats: Optional[dict]) -> Optional[dict]:
    """``norm_stats`` if given, else the GN stats of the full-map forward
    when the head's towers use GroupNorm (None without GN)."""
    if norm_stats is not None or not any(
            isinstance(m, nn.GroupNorm) for layer in tower_layers(head)
            for m in layer.modules()):
        return norm_stats
    with torch.no_grad():
        return head_forward_with_stats(head, [f.detach() for f in feats])[1]


# ----------------------------------------------------------------------
# targets from head outputs
# ----------------------------------------------------------------------


def _decode_boxes(head, priors: Tensor, deltas: Tensor,
                  strides: Tensor) -> Tensor:
    if getattr(head, 'norm_on_bbox', False) and head.training:
        deltas = deltas * strides[:, None]  # FCOS scales only in eval mode
    boxes = head.bbox_coder.decode(priors, deltas, max_shape=None)
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes


def candidate_scalars(head, cls_vec: Tensor, box_vec: Tensor,
                      ctr_vec: Optional[Tensor], anchor_ids: Tensor,
                      labels: Tensor, priors: Tensor,
                      strides: Tensor) -> Dict[Target, Tensor]:
    """Scalar targets of N candidates from their head outputs.

    Args:
        cls_vec (Tensor): (N, A * cls_out_channels) class logits.
        box_vec (Tensor, optional): (N, A * encode_size) box regression
            (None: the ``cls`` score only).
        ctr_vec (Tensor, optional): (N, A) score-factor logits
            (FCOS / ATSS centerness).
        anchor_ids (Tensor): (N,) prior index within the cell.
        labels (Tensor): (N,) classes.
        priors (Tensor): (N, 2 | 4) priors.
        strides (Tensor): (N,) level stride (FCOS ``norm_on_bbox``).

    Returns:
        dict: target -> (N,) final score / signed box extents in pixels.
    """
    n = labels.shape[0]
    ar = torch.arange(n, device=labels.device)
    a = _num_priors(head)
    c = head.cls_out_channels
    logits = cls_vec.reshape(n, a, c)[ar, anchor_ids]
    if getattr(head, 'use_sigmoid_cls', True):
        score = logits[ar, labels].sigmoid()
    else:
        score = logits.softmax(-1)[ar, labels]
    if ctr_vec is not None:
        score = score * ctr_vec.reshape(n, a)[ar, anchor_ids].sigmoid()
    if box_vec is None:
        return {Target.CLS: score}
    enc = box_vec.shape[1] // a
    deltas = box_vec.reshape(n, a, enc)[ar, anchor_ids]
    boxes = _decode_boxes(head, priors, deltas, strides)
    out = {t: box_target(boxes, t) for t in BOX_TARGETS}
    return {Target.CLS: score, **out, 'boxes': boxes}


def _default_pad_shape(head, feats) -> Tuple[int, int]:
    """Padded input size implied by the first level: (h_0 s_y, w_0 s_x)."""
    s = _level_strides(head)[0]
    return (feats[0].shape[-2] * s[0], feats[0].shape[-1] * s[1])


def _mlvl_priors(head, feats) -> List[Tensor]:
    sizes = [f.shape[-2:] for f in feats]
    return head.prior_generator.grid_priors(
        sizes, dtype=feats[0].dtype, device=feats[0].device)


def candidate_priors(head, feats, level_ids: Tensor,
                     loc_inds: Tensor) -> Tensor:
    """(N, 2 | 4) priors of candidates given by level and prior index
    within the level."""
    priors = _mlvl_priors(head, feats)
    offs = torch.as_tensor([0] + [p.shape[0] for p in priors[:-1]],
                           device=level_ids.device).cumsum(0)
    return torch.cat(priors)[offs[level_ids] + loc_inds]


# ----------------------------------------------------------------------
# patch path
# ----------------------------------------------------------------------

# a "piece": (candidate rows (n,), stride (sy, sx), level maps (n, h, w))
Piece = Tuple[Tensor, Tuple[float, float], Tensor]


def patch_level_maps(head: nn.Module, feats: Sequence[Tensor],
                     cands: Candidates, targets: Sequence[Target],
                     smoothing='gaussian', grad_mode='pos_relu',
                     create_graph: bool = False,
                     norm_stats: Optional[dict] = None):
    """Batched per-candidate ODAM maps on each candidate's FPN level.

    Args:
        head: FCOS / RetinaNet / ATSS-like dense head (not modified).
        feats (list[Tensor]): FPN levels, each (B, C, h_l, w_l).
        cands (Candidates): N candidates; their ``bboxes`` (input pixels)
            size the smoothing kernel (default: the decoded boxes).
        targets (list[Target]): scalar targets (not ``combined``).
        norm_stats (dict, optional): GN stats from
            :func:`head_forward_with_stats` (computed if missing).

    Returns:
        tuple: ``pieces`` dict target -> list of :data:`Piece`, and the
        decoded boxes (N, 4) (input pixels, detached).
    """
    smoothing = parse_smoothing(smoothing).value
    grad_mode = parse_grad_mode(grad_mode)
    cands.check_levels(len(feats))
    img_inds, level_ids, loc_inds, labels, boxes = (
        cands.img_inds, cands.level_ids, cands.loc_inds, cands.labels,
        cands.bboxes)
    radius = receptive_radius(head)
    norm_stats = _ensure_norm_stats(head, feats, norm_stats)
    rs = max_kernel_radius([MAX_SIGMA]) if smoothing == 'gaussian' else 0
    strides = _level_strides(head)
    a = _num_priors(head)
    pieces: Dict[Target, List[Piece]] = {t: [] for t in targets}
    n = labels.shape[0]
    all_boxes = feats[0].new_zeros(n, 4)
    mlvl_priors = _mlvl_priors(head, feats)

    ctx: Dict = {}
    hooks = HookList()

    # each tower layer's output is cropped to the part that is exact (its
    # own radius less on every side) and zeroed outside the real map
    crops = {}
    for name in ('cls_convs', 'reg_convs'):
        off = 0
        for layer in list(getattr(head, name, []) or []):
            off += layer_radius(layer)
            crops[id(layer)] = (layer_radius(layer), off)

    def mask_hook(mod, inp, out):
        r, off = crops[id(mod)]
        size = out.shape[-1]
        mask = ctx['mask']
        pm = mask.shape[-1]
        return out[..., r:size - r, r:size - r] * \
            mask[..., off:pm - off, off:pm - off]

    def gn_hook(mod, inp, out):
        mean, var = norm_stats[(id(mod), ctx['level'])]
        x = inp[0]
        m = mean[ctx['img_inds']].to(x)[:, :, None]
        v = var[ctx['img_inds']].to(x)[:, :, None]
        xr = x.reshape(x.shape[0], mod.num_groups, -1)
        y = ((xr - m) / torch.sqrt(v + mod.eps)).reshape(x.shape)
        if mod.affine:
            y = y * mod.weight[None, :, None, None] + \
                mod.bias[None, :, None, None]
        return y

    try:
        for layer in tower_layers(head):
            hooks.forward(layer, mask_hook)
            for m in layer.modules():
                if isinstance(m, nn.GroupNorm):
                    hooks.forward(m, gn_hook)
        with torch.enable_grad():
            for lvl in level_ids.unique().tolist():
                rows = (level_ids == lvl).nonzero().squeeze(1)
                feat = feats[lvl]
                h, w = feat.shape[-2:]
                cells = loc_inds[rows] // a
                anchors = loc_inds[rows] % a
                centers = torch.stack([cells // w, cells % w], 1)
                big, big_mask = gather_patches(feat, img_inds[rows], centers,
                                               radius + rs)
                p = 2 * radius + 1
                x = big[:, :, rs:rs + p, rs:rs + p]
                if not (create_graph and x.requires_grad):
                    x = x.detach().requires_grad_(True)
                ctx.update(level=lvl, img_inds=img_inds[rows],
                           mask=big_mask[:, :, rs:rs + p, rs:rs + p])
                outs = head.forward_single(x, *level_call_args(head, lvl))
                vec = [o[:, :, (o.shape[-2] - 1) // 2, (o.shape[-1] - 1) // 2]
                       for o in outs]
                st = torch.full((len(rows), ), strides[lvl][1],
                                device=x.device)
                ys = candidate_scalars(head, vec[0], vec[1],
                                       vec[2] if len(vec) > 2 else None,
                                       anchors, labels[rows],
                                       mlvl_priors[lvl][loc_inds[rows]], st)
                dec = ys.pop('boxes').detach()
                all_boxes[rows] = dec
                sb = dec if boxes is None else boxes[rows].to(dec)
                if smoothing == 'gaussian':
                    sig = box_sigmas(box_wh_in_cells(sb, strides[lvl]))
                for ti, t in enumerate(targets):
                    g, = torch.autograd.grad(
                        ys[t].sum(), x, create_graph=create_graph,
                        retain_graph=create_graph or ti < len(targets) - 1)
                    if not create_graph:
                        g = g.detach()
                    # positions outside the real map are padding in the
                    # original forward: their gradient does not exist
                    g = F.pad(g * ctx['mask'], (rs, rs, rs, rs))
                    if smoothing == 'gaussian':
                        g = gaussian_smooth(g, sig)
                    m = apply_grad_mode(odam_raw(g, big), grad_mode)
                    pieces[t].append((rows, strides[lvl],
                                      paste_patches(m, centers, (h, w))))
    finally:
        hooks.remove()
    return pieces, all_boxes


def render_padded(pieces: List[Piece], n: int, pad_shape,
                  out_size) -> Tensor:
    """Sum pieces into (n, H_o, W_o) maps on a grid covering ``pad_shape``."""
    out = None
    for rows, stride, maps in pieces:
        r = level_to_padded(maps, stride, pad_shape, out_size)
        if out is None:
            out = r.new_zeros(n, *r.shape[1:])
        out = out.index_add(0, rows, r)  # out of place: differentiable
    if out is None:
        out = torch.zeros(n, int(out_size[0]), int(out_size[1]))
    return out


def dense_candidate_maps(head, feats, cands: Candidates,
                         out_size=(50, 50),
                         options: Optional[MapOptions] = None,
                         pad_shape=None,
                         norm_stats=None, chunk_size: int = 256,
                         record=None,
                         reversed_head: Optional[bool] = None) -> Tensor:
    """ODAM maps of dense-head candidates, batched.

    The ``cls`` target of a supported head takes the reversed head
    (:mod:`.reversed_head`: no forward per candidate), other targets and
    heads the patch path; both freeze the norm statistics and give the same
    maps.

    Args:
        head: dense head (FCOS / RetinaNet / ATSS like), not modified.
        feats (Sequence[Tensor]): FPN levels (B, C, h_l, w_l).
        cands (Candidates): N candidates (``loc_inds`` = prior index
            within the level, see module doc); their ``bboxes`` (input
            pixels) size the smoothing kernel (default: the decoded boxes).
        out_size (tuple): (H_o, W_o) of the output grid, which covers the
            padded network input.
        options (MapOptions, optional): target (``cls`` or a box extent),
            smoothing, grad mode, ``create_graph``; default
            ``MapOptions()`` (``cls``, Gaussian, ``pos_relu``, no graph).
        pad_shape (tuple, optional): padded input (H, W); default
            ``(h_0 * stride_0, w_0 * stride_0)``.
        norm_stats (dict, optional): GN stats of the full-map forward.
        chunk_size (int): candidates per patch batch (bounds memory).
        record (TowerRecord, optional): from
            :func:`~.reversed_head.forward_recording` on ``feats`` (the
            forward that produced the candidates; with or without
            autograd: ``create_graph`` differentiates the scores with
            frozen GN statistics on the candidates' windows); recorded
            without autograd when missing.
        reversed_head (bool, optional): None = when supported, True =
            require it (error otherwise), False = patch path.

    Returns:
        Tensor: (N, H_o, W_o) raw maps (>= 0 except for ``pos_norelu``).
    """
    opt = MapOptions() if options is None else options
    t = opt.target
    n = len(cands)
    if pad_shape is None:
        pad_shape = _default_pad_shape(head, feats)
    if n == 0:
        return feats[0].new_zeros(0, int(out_size[0]), int(out_size[1]))
    towers = None
    if reversed_head is not False:
        towers = reversed_head_spec(head) if t == Target.CLS else None
        if towers is None and reversed_head:
            raise NotImplementedError(
                f'the reversed head supports the cls target of FCOS / ATSS '
                f'/ RetinaNet conv towers, not {type(head).__name__} / '
                f'{t.value}')
    if towers is not None:
        cands.check_levels(len(feats))
        if record is None:
            # values only; with create_graph the scores' frozen-statistics
            # graph is re-computed on the candidates' windows
            with torch.no_grad():
                _, record = forward_recording(head, feats, towers)
        pri = candidate_priors(head, feats, cands.level_ids, cands.loc_inds)
        return reversed_head_maps(head, feats, record, cands, pri, out_size,
                                  pad_shape, opt, towers)
    norm_stats = _ensure_norm_stats(head, feats, norm_stats)
    outs = []
    for sel in torch.arange(n, device=cands.device).split(int(chunk_size)):
        pieces, _ = patch_level_maps(head, feats, cands[sel], [t],
                                     opt.smoothing, opt.grad_mode,
                                     opt.create_graph, norm_stats)
        outs.append(render_padded(pieces[t], len(sel), pad_shape, out_size))
    return torch.cat(outs)


# ----------------------------------------------------------------------
# exact autograd path
# ----------------------------------------------------------------------


def _tower_parts(head):
    """``(pred_convs, towers)`` of a head the tower path may serve
    (:mod:`mmdet_odam.paths.gn_exact`): its direct ``nn.Conv2d`` children
    and its ``cls_convs`` / ``reg_convs`` layers; ``([], [])`` when they
    do not qualify."""
    preds = [m for m in head.children() if isinstance(m, nn.Conv2d)]
    tlayers = [list(getattr(head, k, []) or [])
               for k in ('cls_convs', 'reg_convs')]
    ok = bool(preds) and all(conv_radius(p) is not None for p in preds) \
        and all(tower_supported(t) for t in tlayers)
    return (preds, tlayers) if ok else ([], [])


def level_forward(head, x: Tensor, call_args: tuple, parts: tuple):
    """The head's forward of one level of one image, with grad, recording
    what the tower path needs.

    Args:
        x (Tensor): (1, C, h, w) level map leaf (``requires_grad``).
        call_args (tuple): ``forward_single``'s extra arguments.
        parts (tuple): :func:`_tower_parts` of the head.

    Returns:
        tuple: ``(x, outs, seen, touts)``: ``outs`` of ``forward_single``
        (graph attached), ``seen`` pred conv -> (input, output), ``touts``
        tower layer and its conv -> output (empty where the towers do not
        qualify).
    """
    preds, tlayers = parts
    seen: Dict = {}
    touts: Dict = {}
    lh = HookList()

    def pred_hook(mod, inp, out):
        seen[mod] = (inp[0], out)  # graph kept: either path runs

    def tower_hook(mod, inp, out):
        touts[mod] = out

    try:
        for p in preds:
            lh.forward(p, pred_hook)
        for t in tlayers:
            for layer in t:
                lh.forward(layer, tower_hook)
                lh.forward(layer.conv, tower_hook)
        with torch.enable_grad():
            outs = head.forward_single(x, *call_args)
    finally:
        lh.remove()
    return x, outs, seen, touts


def own_level_forwards(head, feats: Sequence[Tensor]) -> Optional[Dict]:
    """:func:`level_forward` of every level of a one-image batch, for the
    prediction and then the exact maps (one head forward in all); None
    where the head's ``forward_single`` takes other arguments than
    ``scale`` / ``stride`` or the batch holds several images (a level's
    backward would then run over all of them)."""
    if feats[0].shape[0] != 1:
        return None
    try:
        args = [level_call_args(head, lvl) for lvl in range(len(feats))]
    except (NotImplementedError, AttributeError, IndexError):
        return None
    parts = _tower_parts(head)
    return {(0, lvl): level_forward(
        head, f.detach().requires_grad_(True), args[lvl], parts)
        for lvl, f in enumerate(feats)}


def exact_level_maps(model, inputs: Tensor, cands: Candidates,
                     targets: Sequence[Target], layer: Optional[str] = None,
                     smoothing='gaussian', grad_mode='pos_relu',
                     chunk_size: int = 16,
                     hooks: Optional[HookList] = None, grad_weights=None,
                     feats: Optional[Sequence[Tensor]] = None,
                     level_forwards: Optional[Dict] = None):
    """Exact per-candidate maps by autograd.

    ``cands``: the N candidates; their ``bboxes`` (input pixels) size the
    smoothing kernel (default: the decoded boxes).

    ``feats``: the FPN levels of ``inputs`` when the caller has them (the
    own-level path then runs no second backbone forward);
    ``level_forwards``: :func:`own_level_forwards` of them, when the caller
    ran it (no second head forward); emptied here, so that each level's
    graph is freed once its maps are done.

    ``layer=None``: each candidate's own FPN level, by the backward of that
    level's head forward of that image only (:mod:`mmdet_odam.paths.
    level_autograd`; GroupNorm statistics included, so exact); heads whose
    ``forward_single`` takes other arguments than ``scale`` / ``stride``
    back-propagate through the whole head. ``'neck'``/any module name: that
    module's output (all of its maps, summed after rendering), chunked
    batched autograd through the model. The model's parameters should not
    require grad (see ``model_guard``).

    Returns:
        tuple: ``pieces`` dict target -> list of pieces, and the decoded
        candidate boxes (N, 4) in input pixels.
    """
    smoothing = parse_smoothing(smoothing).value
    grad_mode = parse_grad_mode(grad_mode)
    img_inds, level_ids, loc_inds, labels, boxes = (
        cands.img_inds, cands.level_ids, cands.loc_inds, cands.labels,
        cands.bboxes)
    head = model.bbox_head
    call_args = None
    if layer is None:
        try:
            call_args = [level_call_args(head, lvl) for lvl in
                         range(len(head.prior_generator.strides))]
        except (NotImplementedError, AttributeError, IndexError):
            call_args = None
    if call_args is not None:  # own level and image only
        if feats is None:
            with torch.no_grad():
                feats = model.extract_feat(inputs)
        mlvl_priors = _mlvl_priors(head, feats)
        strides = _level_strides(head)
        a = _num_priors(head)
        dec = feats[0].new_zeros(labels.shape[0], 4)
        pieces: Dict[Target, List[Piece]] = {t: [] for t in targets}
        # conv towers: window + shared GN basis (paths.gn_exact); else one
        # backward per scalar on the level's forward (paths.level_autograd)
        preds, tlayers = _tower_parts(head)
        use_towers = bool(preds)
        level_forwards = {} if level_forwards is None else level_forwards
        groups = list(cands.level_groups())
        for key in set(level_forwards) - {(i, lv) for i, lv, _ in groups}:
            del level_forwards[key]  # frees the graphs of unused levels
        for img, lvl, rows in groups:
            fw = level_forwards.pop((img, lvl), None)  # freed after use
            if fw is None:
                fw = level_forward(
                    head, feats[lvl][img:img + 1].detach().requires_grad_(
                        True), call_args[lvl], (preds, tlayers))
            x, outs, seen, touts = fw
            cells = loc_inds[rows] // a
            w = x.shape[-1]
            with torch.enable_grad():
                vecs = [o[0][:, cells // w, cells % w].t() for o in outs]
                ys = candidate_scalars(
                    head, vecs[0], vecs[1], vecs[2] if len(vecs) > 2
                    else None, loc_inds[rows] % a, labels[rows],
                    mlvl_priors[lvl][loc_inds[rows]],
                    x.new_full((len(rows), ), strides[lvl][1]))
            towers = None
            if use_towers:
                t_out = [touts.get(t[-1]) if t else x for t in tlayers]
                towers = [(t, [p for p in preds if seen[p][0] is o])
                          for t, o in zip(tlayers, t_out)]
                if sum(len(tp) for _, tp in towers) != len(preds):
                    towers = None  # a prediction conv reads something else
            dec[rows] = ys.pop('boxes').detach()
            sb = dec[rows] if boxes is None else boxes[rows].to(dec)
            sig = box_sigmas(box_wh_in_cells(sb, strides[lvl]))
            feat = x.detach()
            if towers is not None:
                # each candidate's d(target) / d(pred conv output) at its
                # cell, in rounds of distinct cells (the output ops are
                # element-wise)
                rank = torch.zeros_like(cells)
                count: Dict = {}
                for j, c in enumerate(cells.tolist()):
                    rank[j] = count.get(c, 0)
                    count[c] = int(rank[j]) + 1
                coefs = {}
                for t in targets:
                    cg = {p: x.new_zeros(len(rows), seen[p][1].shape[1])
                          for p in preds}
                    for r in range(int(rank.max()) + 1):
                        sel = (rank == r).nonzero().squeeze(1)
                        y = ys[t][sel].sum()
                        if not y.requires_grad:
                            continue
                        gs = torch.autograd.grad(
                            y, [seen[p][1] for p in preds],
                            retain_graph=True, allow_unused=True)
                        for p, g in zip(preds, gs):
                            if g is not None:
                                cs = cells[sel]
                                cg[p][sel] = g[0][:, cs // w, cs % w].t()
                    coefs[t] = [
                        [cg[p] for p in tp]
                        if any(bool(cg[p].any()) for p in tp) else None
                        for _, tp in towers]
                cost = [tower_costs(tl, len(rows) * sum(
                    c[i] is not None for c in coefs.values()))
                    for i, (tl, _) in enumerate(towers)]
                if 2 * sum(c[0] for c in cost) >= sum(c[1] for c in cost):
                    towers = None  # few rows: one backward each is cheaper
            if towers is not None:
                recs = [[layer_record(la, touts[la.conv], touts[la])
                         for la in tl] for tl, _ in towers]
                grads = level_tower_grads(towers, feat, cells, coefs,
                                          chunk_size, recs)
            else:
                grads = ((t, idx, g) for t in targets
                         for idx, g in scalar_grads(ys[t], x, chunk_size))
            for t, idx, g in grads:
                if smoothing == 'gaussian':
                    g = gaussian_smooth(g, sig[idx])
                f = feat.expand(len(idx), -1, -1, -1)
                if grad_weights is not None:  # Grad-CAM(++)
                    g = grad_weights(g, f)
                m = apply_grad_mode(odam_raw(g, f), grad_mode)
                pieces[t].append((rows[idx], strides[lvl], m.detach()))
        return pieces, dec
    own = hooks is None
    hooks = hooks or HookList()
    store: Dict = {}
    handle = None
    try:
        if layer is not None:
            module = resolve_module(model, layer)

            def hook(mod, inp, out):
                new, leaves = as_leaves(out)
                store.setdefault('leaves', []).extend(leaves)
                return new

            handle = hooks.forward(module, hook)
        with torch.enable_grad():
            if layer is None:
                with torch.no_grad():
                    feats = model.extract_feat(inputs)
                feats = [f.detach().requires_grad_(True) for f in feats]
                leaves = feats
            else:
                feats = model.extract_feat(inputs)
            outs = head(feats)
            leaves = leaves if layer is None else store.get('leaves')
            if not leaves:
                raise ValueError(
                    f'Layer {layer!r} is not used when computing the '
                    f'detections; the detections do not depend on it')
            mlvl_priors = _mlvl_priors(head, feats)
            strides = _level_strides(head)
            a = _num_priors(head)
            n = labels.shape[0]
            st = feats[0].new_zeros(n)
            order = []
            parts = [[] for _ in outs]
            pri_parts = []
            for lvl in level_ids.unique().tolist():
                rows = (level_ids == lvl).nonzero().squeeze(1)
                cells = loc_inds[rows] // a
                w = feats[lvl].shape[-1]
                for k, o in enumerate(outs):
                    parts[k].append(o[lvl][img_inds[rows], :, cells // w,
                                           cells % w])
                pri_parts.append(mlvl_priors[lvl][loc_inds[rows]])
                st[rows] = strides[lvl][1]
                order.append(rows)
            order = torch.cat(order)
            inv = torch.empty_like(order)
            inv[order] = torch.arange(len(order), device=order.device)
            vecs = [torch.cat(p)[inv] for p in parts]
            pri = torch.cat(pri_parts)[inv]
            ys = candidate_scalars(head, vecs[0], vecs[1],
                                   vecs[2] if len(vecs) > 2 else None,
                                   loc_inds % a, labels, pri, st)
            dec = ys.pop('boxes').detach()
            sb = dec if boxes is None else boxes.to(dec)
            pad = tuple(inputs.shape[-2:])
            pieces: Dict[Target, List[Piece]] = {t: [] for t in targets}
            state: Dict = {}
            for t in targets:
                for rows in torch.arange(n, device=ys[t].device).split(
                        int(chunk_size)):
                    gs = row_grads(ys[t], leaves, rows, state)
                    use = [(k, g) for k, g in enumerate(gs) if g is not None]
                    if not use:
                        raise ValueError(
                            f'The detections do not depend on layer '
                            f'{layer!r} (no gradient reaches it)')
                    for k, g in use:
                        leaf = leaves[k]
                        if leaf.dim() != 4:
                            continue
                        sel = rows
                        if layer is None:
                            keep = level_ids[rows] == k
                            if not keep.any():
                                continue
                            sel = rows[keep]
                            g = g[keep]
                        g = g[torch.arange(len(sel)), img_inds[sel]]
                        h, w = leaf.shape[-2:]
                        stride = (pad[0] / h, pad[1] / w)
                        if layer is None:
                            stride = strides[k]
                        if smoothing == 'gaussian':
                            g = gaussian_smooth(
                                g, box_sigmas(box_wh_in_cells(sb[sel],
                                                              stride)))
                        a_sel = leaf.detach()[img_inds[sel]]
                        if grad_weights is not None:  # Grad-CAM(++)
                            g = grad_weights(g, a_sel)
                        m = apply_grad_mode(odam_raw(g, a_sel), grad_mode)
                        pieces[t].append((sel, stride, m.detach()))
    finally:
        if handle is not None:
            handle.remove()
        if own:
            hooks.remove()
    return pieces, dec


# ----------------------------------------------------------------------
# candidate tracking prediction
# ----------------------------------------------------------------------


def tracked_predict_by_feat(head, cls_scores, bbox_preds, score_factors=None,
                            batch_img_metas=None, cfg=None, rescale=False,
                            with_nms=True, feats=None,
                            record=None) -> List[InstanceData]:
    """mmdet ``BaseDenseHead.predict_by_feat`` that also records
    ``level_ids``, ``loc_inds`` and ``cand_inds`` of every kept row.

    ``feats`` (FPN levels) are needed when ``cfg.nms.type == 'odam_nms'``;
    ``record`` (:class:`~.reversed_head.TowerRecord` of the forward that
    gave ``cls_scores``) spares the candidate maps a second head forward.
    """
    from mmdet.models.utils import select_single_mlvl
    num_levels = len(cls_scores)
    sizes = [cls_scores[i].shape[-2:] for i in range(num_levels)]
    mlvl_priors = head.prior_generator.grid_priors(
        sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
    results = []
    for img_id, meta in enumerate(batch_img_metas):
        cls_list = select_single_mlvl(cls_scores, img_id, detach=True)
        box_list = select_single_mlvl(bbox_preds, img_id, detach=True)
        if score_factors is not None:
            fac_list = select_single_mlvl(score_factors, img_id, detach=True)
        else:
            fac_list = [None] * num_levels
        results.append(
            tracked_predict_single(head, cls_list, box_list, fac_list,
                                   mlvl_priors, meta, cfg, rescale, with_nms,
                                   feats, img_id, record))
    return results


def tracked_predict_single(head, cls_score_list, bbox_pred_list,
                           score_factor_list, mlvl_priors, img_meta, cfg,
                           rescale=False, with_nms=True, feats=None,
                           img_id=0, record=None) -> InstanceData:
    """Mirror of ``BaseDenseHead._predict_by_feat_single`` with tracking."""
    from mmdet.models.utils import filter_scores_and_topk
    from mmdet.structures.bbox import cat_boxes
    with_factors = score_factor_list[0] is not None
    cfg = ConfigDict(copy.deepcopy(head.test_cfg if cfg is None else cfg))
    img_shape = img_meta['img_shape']
    nms_pre = cfg.get('nms_pre', -1)
    boxes_l, priors_l, scores_l, labels_l, facs_l = [], [], [], [], []
    lvl_l, loc_l = [], []
    for lvl, (cls_score, bbox_pred, fac, priors) in enumerate(
            zip(cls_score_list, bbox_pred_list, score_factor_list,
                mlvl_priors)):
        dim = head.bbox_coder.encode_size
        bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, dim)
        if with_factors:
            fac = fac.permute(1, 2, 0).reshape(-1).sigmoid()
        cls_score = cls_score.permute(1, 2,
                                      0).reshape(-1, head.cls_out_channels)
        if getattr(head.loss_cls, 'custom_cls_channels', False):
            scores = head.loss_cls.get_activation(cls_score)
        elif head.use_sigmoid_cls:
            scores = cls_score.sigmoid()
        else:
            scores = cls_score.softmax(-1)[:, :-1]
        scores, labels, keep, filt = filter_scores_and_topk(
            scores, cfg.get('score_thr', 0), nms_pre,
            dict(bbox_pred=bbox_pred, priors=priors))
        boxes_l.append(filt['bbox_pred'])
        priors_l.append(filt['priors'])
        scores_l.append(scores)
        labels_l.append(labels)
        lvl_l.append(torch.full_like(keep, lvl))
        loc_l.append(keep)
        if with_factors:
            facs_l.append(fac[keep])
    bbox_pred = torch.cat(boxes_l)
    priors = cat_boxes(priors_l)
    bboxes = head.bbox_coder.decode(priors, bbox_pred, max_shape=img_shape)
    res = InstanceData()
    res.bboxes = bboxes
    res.scores = torch.cat(scores_l)
    res.labels = torch.cat(labels_l)
    res.level_ids = torch.cat(lvl_l)
    res.loc_inds = torch.cat(loc_l)
    res.cand_inds = torch.arange(len(res.scores), device=res.scores.device)
    if with_factors:
        res.score_factors = torch.cat(facs_l)
    if record is not None:  # the reversed head's maps decode nothing again
        res.priors = priors
    return tracked_post_process(head, res, cfg, rescale, with_nms, img_meta,
                                feats, img_id, record)


def tracked_post_process(head, results, cfg, rescale=False, with_nms=True,
                         img_meta=None, feats=None, img_id=0, record=None):
    """Mirror of ``BaseDenseHead._bbox_post_process`` (tracking fields ride
    along); with ``cfg.nms.type == 'odam_nms'`` runs Odam-NMS on ODAM ``cls``
    maps of all candidates and stores ``results.odam_maps``."""
    from mmdet.structures.bbox import get_box_tensor, get_box_wh, scale_boxes
    input_boxes = get_box_tensor(results.bboxes).clone()
    if rescale:
        scale_factor = [1 / s for s in img_meta['scale_factor']]
        results.bboxes = scale_boxes(results.bboxes, scale_factor)
    results.input_bboxes = input_boxes
    if hasattr(results, 'score_factors'):
        fac = results.pop('score_factors')
        results.scores = results.scores * fac
    if cfg.get('min_bbox_size', -1) >= 0:
        w, h = get_box_wh(results.bboxes)
        valid = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        if not valid.all():
            results = results[valid]
    priors = results.pop('priors', None)
    if with_nms and results.bboxes.numel() > 0:
        bboxes = get_box_tensor(results.bboxes)
        nms_cfg = cfg.nms
        if nms_cfg.get('type') == 'odam_nms':
            if feats is None:
                raise ValueError('odam_nms needs the FPN features')
            n = len(results)
            cand = Candidates.of_image(results.level_ids, results.loc_inds,
                                       results.labels, results.input_bboxes,
                                       img=img_id)
            size = nms_map_size(img_meta['img_shape'])
            pad_shape = img_meta.get('batch_input_shape')
            if record is not None and priors is not None:
                # the forward's record and the candidates' own priors
                if pad_shape is None:
                    pad_shape = _default_pad_shape(head, feats)
                maps = reversed_head_maps(
                    head, feats, record, cand, priors, size, pad_shape,
                    cuda_graph=nms_cfg.get('cuda_graph', True))
            else:
                maps = dense_candidate_maps(head, feats, cand, size,
                                            pad_shape=pad_shape,
                                            record=record)
            assert maps.shape[0] == n
            det, keep = batched_odam_nms(bboxes, results.scores,
                                         results.labels, maps.detach(),
                                         nms_cfg)
            results = results[keep]
            results.odam_maps = maps.detach()[keep]
        else:
            det, keep = batched_nms(bboxes.float(), results.scores.float(),
                                    results.labels, nms_cfg)
            results = results[keep]
        results.scores = det[:, -1].to(results.scores)
        results = results[:cfg.max_per_img]
    return results


# ----------------------------------------------------------------------
# explainer
# ----------------------------------------------------------------------


@EXPLAINERS.register_module(name='odam_dense')
class DenseHeadExplainer(BaseExplainer):
    """ODAM for single-stage detectors with FCOS / RetinaNet / ATSS-like
    heads (``model.bbox_head``).

    Default layer: the FPN level that produced each detection. Heads without
    GroupNorm take the batched patch path (exact); with ``path='auto'``
    (default) GroupNorm heads, ``path='exact'``, Grad-CAM weights, heads the
    patch path does not support, or a ``layer`` (``'neck'`` = every FPN
    level, summed after rendering; any module name, e.g.
    ``'backbone.layer3'``) use exact autograd paths.
    ``path='fast'`` takes the patch path wherever it applies, also on GN
    heads (frozen GN statistics, see module doc).
    """

    def __init__(self, model, *args, **kwargs):
        support = probe_dense_detector(model)
        if not support.ok:
            hint = ("method='odam' picks the exact generic path for it"
                    if self.method == 'odam' else "use method='odam' or "
                    "'drise'")
            raise ValueError(
                f'{self.method} ({type(self).__name__}) does not support '
                f'{type(model).__name__}: {"; ".join(support.reasons)}; '
                f'{hint}')
        super().__init__(model, *args, **kwargs)

    adapter = 'dense'

    def plan(self):
        """Mirror of the path choice in :meth:`_explain`."""
        head = self.head
        layer = self.layer or 'fpn_level'
        if getattr(self, 'grad_weights', None) is not None:
            return 'level_autograd', True, layer, ()
        if self.layer is not None:
            return 'autograd', True, layer, ()
        patch = patch_path_support(head)
        if not patch.ok:
            return 'level_autograd', True, layer, patch.reasons
        gn = has_group_norm(head)
        if self.path == ExplainPath.EXACT:
            return 'level_autograd', True, layer, ()
        if gn and self.path == ExplainPath.AUTO:
            return 'level_autograd', True, layer, (
                'GroupNorm head: the patch path freezes the GN statistics '
                "(path='fast' takes it anyway)", )
        if gn:
            return 'patch', False, layer, (
                'frozen GroupNorm statistics (an approximation of the '
                'gradient)', )
        return 'patch', True, layer, ()

    def check_layer(self, layer):
        if layer in (None, 'fpn_level'):
            return None
        return super().check_layer(layer)

    @property
    def head(self):
        return self.model.bbox_head

    def _explain(self, inputs, data_samples, hooks, score_thr, topk, boxes,
                 labels):
        model, head = self.model, self.head
        metas = [ds.metainfo for ds in data_samples]
        grad_weights = getattr(self, 'grad_weights', None)
        exact = self.path == ExplainPath.EXACT or (
            self.path == ExplainPath.AUTO and has_group_norm(head))
        use_exact = exact or self.layer is not None or \
            grad_weights is not None or \
            not supports_patch_path(head)
        with torch.no_grad():
            feats = model.extract_feat(inputs)
        # the own-level exact path of one image: one head forward serves the
        # prediction and the maps
        level_fw = own_level_forwards(head, feats) if use_exact and \
            self.layer is None else None
        if level_fw is not None:
            outs = tuple([t.detach() for t in o] for o in zip(
                *[level_fw[(0, lvl)][1] for lvl in range(len(feats))]))
            stats = None
        else:
            with torch.no_grad():
                outs, stats = head_forward_with_stats(head, feats)
        n_img = len(metas)
        rows = []  # per image: dict of candidate fields
        if boxes is None:
            cfg = head.test_cfg
            res = tracked_predict_by_feat(head, *outs, batch_img_metas=metas,
                                          cfg=cfg, rescale=True,
                                          feats=feats)
            for i, r in enumerate(res):
                r = r[top_scoring(r.scores, score_thr, topk)]
                rows.append(
                    dict(bboxes=r.bboxes, scores=r.scores, labels=r.labels,
                         level_ids=r.level_ids, loc_inds=r.loc_inds,
                         cand_inds=r.cand_inds, input_bboxes=r.input_bboxes))
        else:
            for i in range(n_img):
                lab = None if labels is None else labels[i]
                rows.append(self._match_boxes(outs, feats, metas[i], i,
                                              boxes[i], lab))
        counts = [len(r['scores']) for r in rows]
        cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
        img_inds = torch.cat([
            torch.full((c, ), i, dtype=torch.long, device=inputs.device)
            for i, c in enumerate(counts)
        ])
        layer_name = self.layer or 'fpn_level'
        n = int(sum(counts))
        if n == 0:
            return [
                Explanation.empty(self.targets, m['ori_shape'],
                                  img_path=m.get('img_path'),
                                  method=self.method, layer=layer_name)
                for m in metas
            ]
        cands = Candidates(img_inds, cat['level_ids'], cat['loc_inds'],
                           cat['labels'], cat['input_bboxes'])
        if use_exact:
            pieces, _ = exact_level_maps(
                model, inputs, cands, self.scalar_targets, self.layer,
                self.smoothing, self.grad_mode, self.chunk_size, hooks,
                grad_weights, feats=feats, level_forwards=level_fw)
            del level_fw
        else:
            pieces, _ = patch_level_maps(
                head, feats, cands, self.scalar_targets, self.smoothing,
                self.grad_mode, False, stats)
        results = []
        start = 0
        for i, m in enumerate(metas):
            sel = torch.arange(start, start + counts[i], device=inputs.device)
            start += counts[i]
            raw = {  # normalised one target at a time (peak memory)
                t: self._render_image(pieces[t], sel, m, normalize=True)
                for t in self.scalar_targets
            }
            if boxes is None:
                raw = self.zero_clipped(raw, cat['bboxes'][sel], m)
            maps = self.finalize_maps(raw, normalized=True)
            del raw
            results.append(
                Explanation(
                    bboxes=cat['bboxes'][sel].detach().cpu(),
                    scores=cat['scores'][sel].detach().cpu(),
                    labels=cat['labels'][sel].detach().cpu(),
                    candidate_inds=cat['cand_inds'][sel].detach().cpu(),
                    maps={k: v.cpu() for k, v in maps.items()},
                    img_path=m.get('img_path'),
                    ori_shape=tuple(int(v) for v in m['ori_shape'][:2]),
                    method=self.method,
                    layer=layer_name,
                    level_ids=cat['level_ids'][sel].detach().cpu()))
        return results

    @staticmethod
    def _render_image(pieces: List[Piece], sel: Tensor, meta,
                      normalize: bool = False) -> Tensor:
        """Sum the pieces of rows ``sel`` (a contiguous range) into
        (len(sel), H_ori, W_ori), min-max normalised if ``normalize``."""
        h, w = (int(v) for v in meta['ori_shape'][:2])
        if len(sel) == 0:
            return torch.zeros(0, h, w, device=sel.device)
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        local = []
        for rows, stride, maps in pieces:
            keep = (rows >= lo) & (rows < hi)
            if keep.any():
                local.append((rows[keep] - lo, stride, maps[keep]))
        if meta.get('scale_factor') is not None:
            sx, sy = (float(v) for v in meta['scale_factor'][:2])
        else:
            sy = meta['img_shape'][0] / h
            sx = meta['img_shape'][1] / w
        out = render_local(local, len(sel), (h, w), (sy, sx),
                           normalize=normalize)
        return out.float()

    def _match_boxes(self, outs, feats, meta, img_id, boxes, labels):
        """Best pre-NMS candidate (any prior of any level) for given boxes:
        max IoU with the prior's decoded box, ties broken by score."""
        head = self.head
        boxes = check_boxes(boxes, meta['ori_shape'], feats[0].device)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long,
                                     device=boxes.device).reshape(-1)
            if labels.numel() != boxes.shape[0]:
                raise ValueError('labels must have one entry per box')
            nc = head.num_classes
            if labels.numel() and (labels.min() < 0 or labels.max() >= nc):
                raise ValueError(f'labels must be in [0, {nc})')
        cfg = ConfigDict(copy.deepcopy(head.test_cfg))
        cfg.score_thr = 0.0
        cfg.nms_pre = -1
        from mmdet.models.utils import select_single_mlvl
        n_lvl = len(outs[0])
        with torch.no_grad():
            # every (prior, class) pair before any threshold, no NMS
            lists = [select_single_mlvl(o, img_id, detach=True) for o in outs]
            if len(lists) < 3:
                lists.append([None] * n_lvl)
            allc = tracked_predict_single(head, lists[0], lists[1], lists[2],
                                          _mlvl_priors(head, feats), meta,
                                          cfg, rescale=True, with_nms=False)
        j = match_boxes(allc.bboxes, allc.scores, allc.labels, boxes, labels)
        sf = meta.get('scale_factor', (1.0, 1.0))
        return dict(bboxes=boxes, scores=allc.scores[j],
                    labels=allc.labels[j], level_ids=allc.level_ids[j],
                    loc_inds=allc.loc_inds[j], cand_inds=allc.cand_inds[j],
                    input_bboxes=boxes * boxes.new_tensor(
                        [sf[0], sf[1], sf[0], sf[1]]))
