"""The "reversed head": batched ``cls`` ODAM maps of dense-head candidates
from the head's own forward (paper App. A.1; the authors' FCOS code).

The confidence score of a candidate at cell (y, x) of level l depends on the
head input F only through the conv towers. With the norm statistics of the
forward frozen (as in the patch path of :mod:`.dense`), the backward of a
tower layer ``a = act(norm(conv(x)))`` is linear:
``dx = conv_transpose(D * da, W)``, ``D = act'(.) * gamma / sigma``, and
``D`` is known from the forward (ReLU masks, per-image GN statistics). So:

1. the forward is run once with :func:`forward_recording` (the predict /
   loss forward itself: no second forward); its hooks keep references to
   every tower layer's GroupNorm input and output per level, from which
   ``D`` follows (ReLU mask: output > 0; ``1 / sigma``:
   :func:`group_rstd_batched`);
2. the gradient of each candidate's score w.r.t. its prediction-conv outputs
   is a vector (closed form for sigmoid heads, autograd on a few scalars
   otherwise);
3. that vector is pushed back through the prediction convs and the tower
   layers with ``conv_transpose2d`` on (2R+1)^2 windows, all candidates of
   all levels in one batch (the head's convs are shared by the levels);
4. map = grad-mode(sum_c F_c * smooth(g_c)) on the window, rendered on the
   output grid by :func:`~mmdet_odam.core.render_patches`.

Steps 2-4 (:func:`_maps_core`) are tensor ops without host sync; on a GPU
Odam-NMS replays them as CUDA graphs (:class:`MapsGraphCache`).

It equals the patch path (same frozen-statistics approximation, tested)
without re-running the towers on every candidate's window, so the cost per
candidate is the transposed convs only. Differentiable like the patch path
with ``create_graph``: w.r.t. the head's weights, GN gamma and (through the
score coefficients and the feature factor) the features.

Supported: mmdet ``FCOSHead``, ``ATSSHead`` and ``RetinaHead`` (and
subclasses that keep their ``forward_single``) whose tower layers are
``ConvModule(conv=Conv2d stride 1 'same', norm=GN | eval BN | none,
act=ReLU | none)``; :func:`reversed_head_spec` returns None otherwise and
callers fall back to the patch path.
"""
import functools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import (Candidates, apply_grad_mode, box_sigmas,
                    gaussian_kernels1d, max_kernel_radius, render_patches)
from ..core.smoothing import MAX_SIGMA, band_matrices
from ..utils.cuda_graphs import CudaGraphCache
from .base import HookList
from .targets import MapOptions, Target


@dataclass
class Tower:
    """A conv tower and the prediction convs reading its output.

    Attributes:
        layers (list[nn.Module]): ``ConvModule`` layers, input first.
        preds (list[tuple[int, nn.Conv2d]]): (index in the head's output
            tuple, prediction conv) for the outputs the score depends on.
    """
    layers: List[nn.Module]
    preds: List[Tuple[int, nn.Conv2d]] = field(default_factory=list)


def _same_conv_radius(conv) -> Optional[int]:
    """Radius of a stride-1 'same' square plain Conv2d, else None."""
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        return None
    k, d, s, p = conv.kernel_size, conv.dilation, conv.stride, conv.padding
    if k[0] != k[1] or d[0] != d[1] or s != (1, 1) or k[0] % 2 == 0 or \
            p != ((k[0] - 1) // 2 * d[0], ) * 2:
        return None
    return (k[0] - 1) // 2 * d[0]


def _layer_ok(layer) -> bool:
    from mmcv.cnn import ConvModule
    if not isinstance(layer, ConvModule) or \
            tuple(layer.order) != ('conv', 'norm', 'act') or \
            getattr(layer, 'with_explicit_padding', False):
        return False
    if _same_conv_radius(layer.conv) is None:
        return False
    norm = layer.norm if layer.with_norm else None
    if norm is not None and not (
            isinstance(norm, nn.GroupNorm) or
            (isinstance(norm, nn.modules.batchnorm._BatchNorm)
             and not norm.training and norm.track_running_stats)):
        return False
    act = layer.activate if layer.with_activation else None
    return act is None or type(act) is nn.ReLU


def reversed_head_spec(head: nn.Module) -> Optional[List[Tower]]:
    """The towers of ``head`` for the ``cls`` target, or None when the
    reversed head does not apply (see the module doc)."""
    from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
    fwd = type(head).forward_single
    cls_t = Tower(list(getattr(head, 'cls_convs', []) or []))
    reg_t = Tower(list(getattr(head, 'reg_convs', []) or []))
    if isinstance(head, FCOSHead) and fwd is FCOSHead.forward_single:
        cls_t.preds.append((0, head.conv_cls))
        (reg_t if head.centerness_on_reg else cls_t).preds.append(
            (2, head.conv_centerness))
    elif isinstance(head, ATSSHead) and fwd is ATSSHead.forward_single:
        cls_t.preds.append((0, head.atss_cls))
        reg_t.preds.append((2, head.atss_centerness))
    elif isinstance(head, RetinaHead) and fwd is RetinaHead.forward_single:
        cls_t.preds.append((0, head.retina_cls))
    else:
        return None
    towers = [t for t in (cls_t, reg_t) if t.preds]
    for t in towers:
        if not all(_layer_ok(m) for m in t.layers) or any(
                _same_conv_radius(c) is None for _, c in t.preds):
            return None
    return towers


@dataclass
class TowerRecord:
    """What the backward of every tower layer needs, kept by the forward.

    The hooks only keep references (no extra op in the forward): masks,
    norm scales and the gather table are derived when the maps need them.

    Attributes:
        outputs (dict): ``id(layer) -> [(B, C, h_l, w_l)]`` each tower
            layer's norm (or conv) output per level; the in-place ReLU
            makes it the layer's output, either way ``> 0`` is the ReLU
            mask.
        norm_inputs (dict): ``id(layer) -> [(B, C, h_l, w_l)]`` GroupNorm
            inputs per level (their statistics are computed on demand).
        rstds (dict): ``id(layer) -> [(B, G)]`` GroupNorm ``1 / sigma`` per
            level (detached), filled by :meth:`group_rstds`.
        outs (tuple): the head's outputs, as ``head(feats)`` returns them.
        towers (list[Tower]): the towers recorded.
        frozen (bool): recorded with ``freeze_norm`` (the outputs' graph
            has the frozen statistics; no GroupNorm inputs are kept).
    """
    outputs: Dict = field(default_factory=dict)
    norm_inputs: Dict = field(default_factory=dict)
    rstds: Dict = field(default_factory=dict)
    outs: tuple = ()
    towers: Optional[List[Tower]] = None
    frozen: bool = False
    _tables: Dict = field(default_factory=dict, repr=False)

    def table(self, feats: Sequence[Tensor], towers: List[Tower],
              score_outs: Sequence[int] = ()):
        """(B, S + 1, C_in + sum C_l [+ score outputs]) channels-last
        :func:`flat_table` of the head input, every activated tower layer's
        output and the head outputs ``score_outs`` (indices into
        :attr:`outs`), cached; and ``key -> first channel`` of each block
        in it (key: ``id(layer)`` or ``('out', index)``)."""
        key = (id(feats[0]), tuple(score_outs))
        if key not in self._tables:
            layers = [m for t in towers for m in t.layers
                      if m.with_activation]
            blocks = [(id(m), self.outputs[id(m)]) for m in layers] + [
                (('out', k), self.outs[k]) for k in score_outs]
            cols, c = {}, feats[0].shape[1]
            for k, maps in blocks:
                cols[k] = c
                c += maps[0].shape[1]
            per_level = [
                torch.cat([f] + [_detached(maps[lvl]) for _, maps in blocks],
                          1) if blocks else f
                for lvl, f in enumerate(feats)
            ]
            self._tables[key] = (flat_table(per_level), cols)
        return self._tables[key]

    def rstd_stack(self, layers: Sequence[nn.Module]) -> Optional[Tensor]:
        """(n * L * B, G) GroupNorm ``1 / sigma`` of the GroupNorm
        ``layers`` (layer-major, then level, then image), or None."""
        gn = [m for m in layers
              if m.with_norm and isinstance(m.norm, nn.GroupNorm)]
        if not gn:
            return None
        self.group_rstds(gn)
        st = torch.stack([r for m in gn for r in self.rstds[id(m)]])
        return st.view(-1, st.shape[-1])

    def group_stats(self, layer: nn.Module) -> Tuple[Tensor, Tensor]:
        """(L * B, G) detached GroupNorm mean and ``1 / sigma`` of a
        recorded (not frozen) GroupNorm ``layer`` (level-major, then
        image), as :func:`_frozen_group_norm` computes them."""
        self.group_rstds([layer])
        xs = self.norm_inputs[id(layer)]
        groups = layer.norm.num_groups
        mean = torch.stack([
            _detached(x).reshape(x.shape[0], groups, -1).mean(-1) for x in xs
        ])
        rstd = torch.stack(self.rstds[id(layer)])
        return mean.flatten(0, 1), rstd.flatten(0, 1)

    def group_rstds(self, layers: Sequence[nn.Module]) -> None:
        """Fill :attr:`rstds` of the GroupNorm ``layers`` from their
        recorded inputs: one batched computation per (groups, eps)."""
        todo = {}
        for m in layers:
            if id(m) in self.norm_inputs and id(m) not in self.rstds:
                todo.setdefault((m.norm.num_groups, m.norm.eps), []).append(m)
        for (groups, eps), ms in todo.items():
            xs = [x for m in ms for x in self.norm_inputs[id(m)]]
            rstd = group_rstd_batched(xs, groups, eps)  # (n, B, G)
            per = len(xs) // len(ms)
            for i, m in enumerate(ms):
                self.rstds[id(m)] = list(rstd[i * per:(i + 1) * per])


def norm_scales(layers: Sequence[nn.Module], rstd: Optional[Tensor],
                level_ids: Tensor, img_inds: Tensor,
                batch_size: int) -> Dict[int, tuple]:
    """``id(layer) -> (rows, channel)`` factors of the norm derivative
    ``gamma / sigma`` of every normalised layer: ``rows`` (N, G) GroupNorm
    ``1 / sigma`` of each candidate's level and image (from
    :meth:`TowerRecord.rstd_stack`, all layers in one gather) or None,
    ``channel`` (C,) the per-channel factor (gamma; eval BatchNorm: gamma /
    sigma) or None. See :func:`_norm_backward`; differentiable w.r.t.
    gamma."""
    norms = [m for m in layers if m.with_norm]
    gn = [id(m) for m in norms if isinstance(m.norm, nn.GroupNorm)]
    rows = {}
    if gn:
        per_layer = rstd.shape[0] // len(gn)
        pick = level_ids * batch_size + img_inds
        rows = dict(zip(gn, rstd.view(len(gn), per_layer, -1).index_select(
            1, pick).unbind(0)))  # (N, G) each
    out = {}
    for m in norms:
        ch = m.norm.weight if m.norm.affine else None
        if id(m) not in rows:  # eval BatchNorm
            inv = torch.rsqrt(m.norm.running_var + m.norm.eps)
            ch = inv if ch is None else inv * ch
        out[id(m)] = (rows.get(id(m)), ch)
    return out


def _norm_backward(g: Tensor, rows: Optional[Tensor],
                   channel: Optional[Tensor]) -> Tensor:
    """``g`` (N, C, p, p) times the norm derivative factors of
    :func:`norm_scales` (no (N, C) expansion)."""
    if rows is not None:
        n, groups = rows.shape
        g = (g.view(n, groups, -1, *g.shape[2:]) *
             rows[:, :, None, None, None]).view(g.shape)
    return g if channel is None else g * channel[:, None, None]


def _detached(x: Tensor) -> Tensor:
    """``x.detach()`` only where it has a graph (no op otherwise)."""
    return x.detach() if x.requires_grad else x


@functools.lru_cache(maxsize=16)
def _segments(sizes: Tuple[int, ...], device, dtype):
    """(T, n) averaging matrix of n consecutive segments of ``sizes`` and
    the (T,) segment id of every position (cached per input size)."""
    ids = torch.repeat_interleave(
        torch.arange(len(sizes), device=device),
        torch.as_tensor(sizes, device=device))
    inv = 1.0 / torch.as_tensor(sizes, dtype=torch.float64, device=device)
    avg = F.one_hot(ids, len(sizes)).to(torch.float64) * inv
    return avg.to(dtype), ids


def group_rstd_batched(xs: Sequence[Tensor], num_groups: int, eps: float,
                       fused: Optional[bool] = None) -> Tensor:
    """GroupNorm ``1 / sigma`` of several inputs at once (detached).

    Args:
        xs (list[Tensor]): n tensors (B, C, ...) of any spatial sizes.
        fused (bool, optional): all inputs in a few large ops (default on
            GPUs) or one reduction per input.

    Returns:
        Tensor: (n, B, G), ``rsqrt(x.reshape(B, G, -1).var(-1,
        unbiased=False) + eps)`` of each; on a GPU as a few launches for
        all (two-pass: mean, then the mean square of the deviations, as
        segment-averaging matmuls).
    """
    b = xs[0].shape[0]
    if not (fused if fused is not None else xs[0].is_cuda):
        # one reduction per input: cheaper where launches cost nothing
        return torch.stack([
            torch.rsqrt(_detached(x).reshape(b, num_groups, -1).var(
                -1, unbiased=False) + eps) for x in xs
        ])
    flat = torch.cat([_detached(x).reshape(b, num_groups, -1) for x in xs],
                     2)  # (B, G, T)
    avg, ids = _segments(tuple(x[0].numel() // num_groups for x in xs),
                         flat.device, flat.dtype)
    dev = flat - (flat @ avg).index_select(2, ids)
    var = (dev * dev) @ avg  # (B, G, n)
    return torch.rsqrt(var + eps).permute(2, 0, 1)


def _frozen_group_norm(mod, x):
    """GroupNorm of ``x`` with detached statistics (same value) and its
    (B, G) ``1 / sigma``."""
    xr = x.reshape(x.shape[0], mod.num_groups, -1)
    m = xr.mean(-1, keepdim=True).detach()
    rstd = torch.rsqrt(xr.var(-1, unbiased=False, keepdim=True).detach() +
                       mod.eps)
    y = ((xr - m) * rstd).reshape(x.shape)
    if mod.affine:
        y = y * mod.weight[None, :, None, None] + \
            mod.bias[None, :, None, None]
    return y, rstd[..., 0]


def forward_recording(head: nn.Module, feats: Sequence[Tensor],
                      towers: Optional[List[Tower]] = None,
                      freeze_norm: bool = False):
    """``head(feats)`` that also returns a :class:`TowerRecord`.

    One hook per tower layer (on its GroupNorm, else on the layer), alive
    for this call only, that keeps references: no tensor op is added to the
    forward. Gradients flow as in ``head(feats)``; with ``freeze_norm`` the
    towers' GroupNorm statistics are detached (same values), so maps
    differentiated with ``create_graph`` get the patch path's derivative
    (frozen statistics throughout; Odam-Train uses it).
    """
    towers = towers if towers is not None else reversed_head_spec(head)
    if towers is None:
        raise NotImplementedError(
            f'the reversed head does not support {type(head).__name__}')
    rec = TowerRecord(towers=towers, frozen=freeze_norm)
    hooks = HookList()

    def layer_hook(layer):
        def hook(mod, inp, out):
            rec.outputs.setdefault(id(layer), []).append(out)
        return hook

    def norm_hook(layer):
        def hook(mod, inp, out):
            rec.norm_inputs.setdefault(id(layer), []).append(inp[0])
            rec.outputs.setdefault(id(layer), []).append(out)
        return hook

    def frozen_hook(layer):
        def hook(mod, inp, out):
            y, rstd = _frozen_group_norm(mod, inp[0])
            rec.rstds.setdefault(id(layer), []).append(rstd)
            rec.outputs.setdefault(id(layer), []).append(y)
            return y
        return hook

    try:
        for t in towers:
            for layer in t.layers:
                if layer.with_norm and isinstance(layer.norm, nn.GroupNorm):
                    hook = frozen_hook if freeze_norm else norm_hook
                    hooks.forward(layer.norm, hook(layer))
                else:
                    hooks.forward(layer, layer_hook(layer))
        rec.outs = head(list(feats))
    finally:
        hooks.remove()
    return rec.outs, rec


def flat_table(level_maps: Sequence[Tensor]) -> Tensor:
    """(B, S + 1, C) channels-last table of all levels' cells (S = sum of
    h_l * w_l, level by level, row-major) plus a zero row at index S."""
    flat = [m.flatten(2).transpose(1, 2) for m in level_maps]
    zero = flat[0].new_zeros(flat[0].shape[0], 1, flat[0].shape[2])
    return torch.cat(flat + [zero], 1)


def flat_table_rows(level_shapes) -> int:
    """Index of the zero row of :func:`flat_table` (S)."""
    return sum(int(h) * int(w) for h, w in level_shapes)


def _level_offsets(level_shapes) -> List[int]:
    """First row of each level in :func:`flat_table`, and S last."""
    offs = [0]
    for h, w in level_shapes:
        offs.append(offs[-1] + int(h) * int(w))
    return offs


@functools.lru_cache(maxsize=16)
def _level_rows(level_shapes: Tuple[Tuple[int, int], ...],
                device) -> Tensor:
    """(L, 3) long ``(h, w, first row in flat_table)`` per level (cached:
    no host-to-device copy per call)."""
    return torch.as_tensor([[h, w, o] for (h, w), o in zip(
        level_shapes, _level_offsets(level_shapes))], device=device)


def _shape_key(level_shapes) -> Tuple[Tuple[int, int], ...]:
    return tuple((int(h), int(w)) for h, w in level_shapes)


@functools.lru_cache(maxsize=16)
def _padded_rows(level_shapes: Tuple[Tuple[int, int], ...], radius: int,
                 device) -> Tuple[Tensor, Tensor, Tensor]:
    """Every level's :func:`flat_table` rows in a map padded by ``radius``
    zero-row cells on each side, all levels in one flat buffer; per level
    (first element, padded width); ``arange(2 radius + 1)`` (cached)."""
    zero_row = flat_table_rows(level_shapes)
    pieces, meta, start = [], [], 0
    for (h, w), o in zip(level_shapes, _level_offsets(level_shapes)):
        m = torch.full((h + 2 * radius, w + 2 * radius), zero_row,
                       dtype=torch.long)
        m[radius:radius + h, radius:radius + w] = torch.arange(
            o, o + h * w).view(h, w)
        pieces.append(m.view(-1))
        meta.append([start, w + 2 * radius])
        start += m.numel()
    return (torch.cat(pieces).to(device), torch.tensor(meta, device=device),
            torch.arange(2 * radius + 1, device=device))


def window_index(level_shapes, level_ids: Tensor, centers: Tensor,
                 radius: int) -> Tensor:
    """(N, P, P) rows of :func:`flat_table` for each candidate's window of
    radius ``radius`` on its level; cells outside the level map point to
    the zero row (one gather from a cached padded map of rows)."""
    buf, meta, ar = _padded_rows(_shape_key(level_shapes), int(radius),
                                 centers.device)
    lv = meta.index_select(0, level_ids)  # (first element, padded width)
    # the window's top-left cell in padded coordinates is (cy, cx)
    base = lv[:, 0] + centers[:, 0] * lv[:, 1] + centers[:, 1]
    pos = (base[:, None] + ar * lv[:, 1:2])[:, :, None] + ar
    return buf[pos]


def _gather_rows(table: Tensor, img_inds: Tensor, idx: Tensor,
                 c0: int = 0, c1: Optional[int] = None) -> Tensor:
    """``table[img_inds, idx, c0:c1]`` as one ``index_select``:
    (N, *idx.shape[1:], c1 - c0) from a (B, R, C) table and (N, ...) rows."""
    b, r, c = table.shape
    flat = table.view(b * r, c)[:, c0:c1]
    if b > 1:
        idx = idx + (img_inds * r).view(-1, *([1] * (idx.dim() - 1)))
    out = flat.index_select(0, idx.reshape(-1))
    return out.view(*idx.shape, out.shape[-1])


def _crop(x: Tensor, r: int, radius: int) -> Tensor:
    """Centre (2r+1)^2 window of (N, P, P, ...) windows of ``radius``."""
    s = radius - r
    return x[:, s:s + 2 * r + 1, s:s + 2 * r + 1]


@functools.lru_cache(maxsize=16)
def _level_strides_xy(strides: Tuple[Tuple[float, float], ...],
                      device) -> Tensor:
    """(L, 2) float ``(stride x, stride y)`` per level (cached)."""
    return torch.as_tensor([[sx, sy] for sy, sx in strides],
                           dtype=torch.float32, device=device)


def _flat_outputs(level_outs: Sequence[Tensor], img_inds: Tensor,
                  rows: Tensor) -> Tensor:
    """(N, K) values of (B, K, h_l, w_l) level outputs at the candidates'
    :func:`flat_table` rows."""
    flat = torch.cat([o.flatten(2) for o in level_outs], 2)  # (B, K, S)
    if flat.shape[0] == 1:
        return flat[0].index_select(1, rows).t()
    return flat[img_inds, :, rows]


def _sigmoid_scores(head) -> bool:
    """True when the score is ``sigmoid(cls)`` (times ``sigmoid`` of the
    score factor): :func:`_sigmoid_score_coefficients` applies."""
    return bool(getattr(head, 'use_sigmoid_cls', False)) and not getattr(
        getattr(head, 'loss_cls', None), 'custom_cls_channels', False)


def _sigmoid_score_coefficients(head, towers, table: Tensor, cols: Dict,
                                img_inds, rows, anchors,
                                labels) -> Dict[int, Tensor]:
    """:func:`_score_coefficients` in closed form for sigmoid heads
    (``s = p q``, ``p = sigmoid(cls)``, ``q = sigmoid(factor)`` or 1):
    ``ds/dcls = s (1 - p)``, ``ds/dfactor = s (1 - q)``; no autograd. The
    logits are read from the ``('out', k)`` columns of ``table``."""
    from .dense import _num_priors
    needed = {k for t in towers for k, _ in t.preds}
    a, c = _num_priors(head), head.cls_out_channels
    n = labels.shape[0]
    cls_ch = anchors * c + labels  # the candidate's logit channel
    vals = _gather_rows(table, img_inds, rows, cols[('out', 0)])  # (N, ...)
    p = vals.gather(1, cls_ch[:, None]).sigmoid()
    q = None
    if 2 in needed:
        q = vals.gather(1, (anchors + cols[('out', 2)] -
                            cols[('out', 0)])[:, None]).sigmoid()
    s = p if q is None else p * q
    coefs = {0: p.new_zeros(n, a * c).scatter_(1, cls_ch[:, None],
                                               s * (1 - p))}
    if q is not None:
        coefs[2] = q.new_zeros(n, a).scatter_(1, anchors[:, None],
                                              s * (1 - q))
    return coefs


def _score_coefficients(head, outs, towers, img_inds, rows, anchors,
                        labels, priors, strides, create_graph, with_boxes,
                        vecs: Optional[Dict[int, Tensor]] = None):
    """d score / d prediction-conv outputs of each candidate.

    Args:
        rows (Tensor): (N,) the candidates' cells in :func:`flat_table`.
        with_boxes (bool): also decode the candidates' boxes.
        vecs (dict, optional): ``out index -> (N, channels)`` outputs at
            the candidates' cells to use instead of ``outs`` (e.g.
            :func:`_window_outputs`).

    Returns:
        tuple: dict ``out index -> (N, channels)`` and the decoded boxes
        (None without ``with_boxes``).
    """
    from .dense import candidate_scalars
    needed = sorted({k for t in towers for k, _ in t.preds})
    used = set(needed) | ({1} if with_boxes else set())
    vecs = dict(vecs or {})
    vecs.update({k: _flat_outputs(outs[k], img_inds, rows)
                 for k in used if k not in vecs})
    with torch.enable_grad():
        ins = {k: v if (create_graph and v.requires_grad) else
               v.detach().requires_grad_(k in needed)
               for k, v in vecs.items()}
        ys = candidate_scalars(head, ins[0], ins.get(1), ins.get(2),
                               anchors, labels, priors, strides)
        grads = torch.autograd.grad(
            ys[Target.CLS].sum(), [ins[k] for k in needed],
            create_graph=create_graph, allow_unused=True)
    coefs = {k: (g if g is not None else torch.zeros_like(ins[k]))
             for k, g in zip(needed, grads)}
    if not create_graph:
        coefs = {k: g.detach() for k, g in coefs.items()}
    boxes = ys['boxes'].detach() if with_boxes else None
    return coefs, boxes


def _frozen_norm(layer: nn.Module, x: Tensor, stats: Optional[tuple],
                 pick: Tensor) -> Tensor:
    """``layer``'s norm of (N, C, p, p) windows with frozen statistics:
    GroupNorm with the (L * B, G) ``stats`` (mean, ``1 / sigma``) rows
    ``pick``, eval BatchNorm with its running ones."""
    norm = layer.norm
    if not isinstance(norm, nn.GroupNorm):
        return F.batch_norm(x, norm.running_mean, norm.running_var,
                            norm.weight, norm.bias, False, 0.0, norm.eps)
    n, c = x.shape[:2]
    mean, rstd = (v.index_select(0, pick)[:, :, None, None, None]
                  for v in stats)
    x = ((x.view(n, norm.num_groups, -1, *x.shape[2:]) - mean) *
         rstd).view(x.shape)
    if norm.affine:
        x = x * norm.weight[:, None, None] + norm.bias[:, None, None]
    return x


def _window_outputs(ctx: '_MapsContext', rec: TowerRecord, table: Tensor,
                    img_inds: Tensor, level_ids: Tensor,
                    centers: Tensor) -> Dict[int, Tensor]:
    """``out index -> (N, channels)`` prediction-conv outputs at the
    candidates' cells, re-computed on each candidate's window of the head
    input (columns ``0:C`` of ``table``) with the norm statistics of
    ``rec`` frozen; zero outside the level map after every layer (the
    convs' zero padding). The values of ``rec.outs`` there; differentiable
    w.r.t. the head's weights and the features as the frozen-statistics
    forward (``forward_recording(..., freeze_norm=True)``), without a
    full-map forward and backward."""
    pick = level_ids * ctx.batch_size + img_inds
    zero_row = flat_table_rows(ctx.shapes)
    out = {}
    for tower in ctx.towers:
        r = _tower_radius(tower)
        idx = window_index(ctx.shapes, level_ids, centers, r)
        x = _gather_rows(table, img_inds, idx, 0,
                         ctx.feat_channels).permute(0, 3, 1, 2)
        for layer in tower.layers:
            conv = layer.conv
            x = F.conv2d(x, conv.weight, conv.bias, dilation=conv.dilation)
            r -= _same_conv_radius(conv)
            if layer.with_norm:
                stats = rec.group_stats(layer) if isinstance(
                    layer.norm, nn.GroupNorm) else None
                x = _frozen_norm(layer, x, stats, pick)
            if layer.with_activation:
                x = F.relu(x)
            inside = _crop(idx, r, _tower_radius(tower)) != zero_row
            x = x * inside[:, None].to(x)
        for k, conv in tower.preds:
            rp = _same_conv_radius(conv)
            xc = x[..., r - rp:r + rp + 1, r - rp:r + rp + 1]
            out[k] = F.conv2d(xc, conv.weight, conv.bias,
                              dilation=conv.dilation)[:, :, 0, 0]
    return out


def _tower_grad(tower: Tower, coefs, scales: Dict, table: Tensor,
                cols: Dict[int, int], img_inds, idx: Tensor,
                radius: int) -> Tuple[Tensor, int]:
    """Gradient of the candidates' scores w.r.t. the tower input, on each
    candidate's window: (N, C, P, P) and its radius.

    ``idx`` (N, 2 radius + 1, 2 radius + 1): :func:`window_index` rows of
    ``table`` (:meth:`TowerRecord.table`) around each candidate; ``scales``:
    :func:`norm_scales` of the candidates.
    """
    g, r = _sum_windows([
        (F.conv_transpose2d(coefs[k][:, :, None, None], conv.weight,
                            dilation=conv.dilation), _same_conv_radius(conv))
        for k, conv in tower.preds
    ])  # on the common window of the prediction convs
    for layer in reversed(tower.layers):
        if layer.with_activation:
            c0 = cols[id(layer)]
            out = _gather_rows(table, img_inds, _crop(idx, r, radius), c0,
                               c0 + g.shape[1])
            g = g * (out > 0).permute(0, 3, 1, 2)
        if layer.with_norm:
            g = _norm_backward(g, *scales[id(layer)])
        conv = layer.conv
        g = F.conv_transpose2d(g, conv.weight, dilation=conv.dilation)
        r += _same_conv_radius(conv)
    return g, r


def _sum_windows(windows: List[Tuple[Tensor, int]]) -> Tuple[Tensor, int]:
    """Sum of (N, C, 2r+1, 2r+1) centred windows of radii r, zero-padded to
    the largest: (sum, radius)."""
    r = max(rw for _, rw in windows)
    out = None
    for w, rw in windows:
        w = F.pad(w, (r - rw, ) * 4) if rw < r else w
        out = w if out is None else out + w
    return out, r


def _tower_radius(tower: Tower) -> int:
    """Radius of a candidate's window on the tower input."""
    return max(_same_conv_radius(c) for _, c in tower.preds) + sum(
        _same_conv_radius(m.conv) for m in tower.layers)


def _smooth_channels_last(g: Tensor, sigmas: Tensor, pad: int) -> Tensor:
    """:func:`~mmdet_odam.core.gaussian_smooth` (with ``pad``) of (N, p, p,
    C) windows as two batched matmuls: (N, p + 2 pad, p + 2 pad, C).
    Kernels are built with radius ``pad`` (no host sync)."""
    n, p, _, c = g.shape
    if pad == 0:
        return g
    k = gaussian_kernels1d(sigmas, radius=pad).to(g)
    q = p + 2 * pad
    band = band_matrices(k, q, p, pad)  # (N, q, p), same for y and x
    t = torch.bmm(band, g.reshape(n, p, p * c)).reshape(n, q, p, c)
    return torch.matmul(band[:, None], t)  # (N, q, q, C)


def reversed_head_maps(head: nn.Module, feats: Sequence[Tensor],
                       rec: TowerRecord, cands: Candidates, priors: Tensor,
                       out_size, pad_shape,
                       options: Optional[MapOptions] = None,
                       towers: Optional[List[Tower]] = None,
                       cuda_graph: bool = False) -> Tensor:
    """``cls`` ODAM maps of N dense-head candidates by the reversed head.

    Args:
        head: supported dense head (:func:`reversed_head_spec`).
        feats (list[Tensor]): head inputs (B, C, h_l, w_l).
        rec (TowerRecord): from :func:`forward_recording` on ``feats``.
        cands (Candidates): N candidates; their ``bboxes`` (input pixels)
            size the smoothing kernel (default: the decoded boxes).
        priors (Tensor): (N, 2 | 4) the candidates' priors.
        out_size (tuple): (H_o, W_o) grid covering ``pad_shape``.
        pad_shape (tuple): padded network input (H, W).
        options (MapOptions, optional): smoothing, grad mode and
            ``create_graph`` (the target must be ``cls``); default
            ``MapOptions()``.
        towers (list[Tower], optional): default: the record's.
        cuda_graph (bool): on a GPU, without autograd and with ``bboxes``
            and a sigmoid head, replay the map computation as a CUDA graph
            captured for this input size and candidate bucket
            (:class:`MapsGraphCache`; the same maps, far fewer launches).

    Returns:
        Tensor: (N, H_o, W_o) raw maps.
    """
    from .dense import _level_strides, _num_priors
    towers = towers or rec.towers or reversed_head_spec(head)
    img_inds, level_ids, loc_inds, labels, boxes = (
        cands.img_inds, cands.level_ids, cands.loc_inds, cands.labels,
        cands.bboxes)
    opt = MapOptions() if options is None else options
    if opt.target != Target.CLS:
        raise ValueError(f'the reversed head explains the cls target, not '
                         f'{opt.target.value!r}')
    smoothing, grad_mode, create_graph = (opt.smoothing.value, opt.grad_mode,
                                          opt.create_graph)
    n = len(cands)
    if n == 0:
        return feats[0].new_zeros(0, int(out_size[0]), int(out_size[1]))
    ctx = _MapsContext(
        head=head, towers=towers, num_priors=_num_priors(head),
        shapes=_shape_key(f.shape[-2:] for f in feats),
        strides=tuple(
            tuple(float(v) for v in st) for st in _level_strides(head)),
        out_size=(int(out_size[0]), int(out_size[1])),
        pad_shape=(float(pad_shape[0]), float(pad_shape[1])),
        smoothing=smoothing, grad_mode=grad_mode,
        feat_channels=feats[0].shape[1], batch_size=feats[0].shape[0])
    layers = [m for t in towers for m in t.layers]
    closed = not create_graph and boxes is not None and _sigmoid_scores(head)
    needed = sorted({k for t in towers for k, _ in t.preds})
    table, cols = rec.table(feats, towers, needed if closed else ())
    ctx.cols = cols
    rstd = rec.rstd_stack(layers)
    grouped = not table.is_cuda and not create_graph
    if closed:
        if cuda_graph and table.is_cuda and not torch.is_grad_enabled():
            out = MAPS_GRAPHS.run(ctx, table, rstd, cands)
            if out is not None:
                return out
        core = _maps_grouped if grouped else _maps_core
        return core(ctx, table, rstd, img_inds, level_ids, loc_inds, labels,
                    boxes)
    geo = _geometry(ctx, level_ids, loc_inds)
    vecs = None
    if create_graph and not rec.frozen:
        # the frozen-statistics derivative of the scores on the windows
        vecs = _window_outputs(ctx, rec, table, img_inds, level_ids,
                               geo['centers'])
    coefs, dec = _score_coefficients(
        head, rec.outs, towers, img_inds, geo['rows'], geo['anchors'],
        labels, priors, geo['st_xy'][:, 0], create_graph,
        with_boxes=boxes is None, vecs=vecs)
    core = _maps_grouped if grouped else _maps_core
    return core(ctx, table, rstd, img_inds, level_ids, loc_inds, labels,
                dec if boxes is None else boxes, coefs, geo)


@dataclass
class _MapsContext:
    """The Python-side constants of one :func:`_maps_core` call."""
    head: nn.Module
    towers: List[Tower]
    num_priors: int
    shapes: Tuple[Tuple[int, int], ...]
    strides: Tuple[Tuple[float, float], ...]
    out_size: Tuple[int, int]
    pad_shape: Tuple[float, float]
    smoothing: str
    grad_mode: object
    feat_channels: int
    batch_size: int
    cols: Dict = field(default_factory=dict)

    def key(self) -> tuple:
        """What a captured CUDA graph depends on besides input shapes: the
        constants and the addresses of the parameters it reads."""
        params = tuple(p.data_ptr() for t in self.towers for m in t.layers
                       for p in m.parameters()) + tuple(
                           c.weight.data_ptr() for t in self.towers
                           for _, c in t.preds)
        return (id(self.head), self.num_priors, self.shapes, self.strides,
                self.out_size, self.pad_shape, self.smoothing,
                str(self.grad_mode), self.feat_channels, self.batch_size,
                tuple(sorted((str(k), v) for k, v in self.cols.items())),
                params)


def _geometry(ctx: _MapsContext, level_ids: Tensor,
              loc_inds: Tensor) -> Dict[str, Tensor]:
    """Candidates' cells: ``centers`` (N, 2) (y, x), ``rows`` in
    :func:`flat_table`, ``anchors``, ``st_xy`` (N, 2) level strides."""
    dev = level_ids.device
    cells, anchors = loc_inds // ctx.num_priors, loc_inds % ctx.num_priors
    lv = _level_rows(ctx.shapes, dev).index_select(0, level_ids)
    return dict(
        centers=torch.stack([cells // lv[:, 1], cells % lv[:, 1]], 1),
        rows=lv[:, 2] + cells, anchors=anchors,
        st_xy=_level_strides_xy(ctx.strides, dev).index_select(0, level_ids))


# candidates per chunk of :func:`_maps_grouped` (temporaries stay in cache)
_CHUNK = 64


def _smoothing_radii(ctx: _MapsContext, boxes: Tensor,
                     geo: Dict[str, Tensor]) -> Tensor:
    """(N,) long Gaussian kernel radius of each candidate (0: identity;
    :func:`~mmdet_odam.core.smoothing.kernel_radius` of its sigma)."""
    if ctx.smoothing != 'gaussian':
        return torch.zeros(boxes.shape[0], dtype=torch.long,
                           device=boxes.device)
    wh = (boxes[:, 2:] - boxes[:, :2]).float() / geo['st_xy']  # in cells
    return torch.ceil(2 * box_sigmas(wh)).long()


def _maps_grouped(ctx: _MapsContext, table: Tensor, rstd: Optional[Tensor],
                  img_inds: Tensor, level_ids: Tensor, loc_inds: Tensor,
                  labels: Tensor, boxes: Tensor,
                  coefs: Optional[Dict] = None,
                  geo: Optional[Dict] = None) -> Tensor:
    """:func:`_maps_core` on the CPU: candidates grouped by their own
    smoothing radius (windows no wider than their kernel; the wider window
    of :func:`_maps_core` only adds zeros) and in chunks of ``_CHUNK``
    (temporaries small enough for the cache). Same maps; host syncs."""
    geo = geo if geo is not None else _geometry(ctx, level_ids, loc_inds)
    radii = _smoothing_radii(ctx, boxes, geo)
    out = table.new_zeros(labels.shape[0], *ctx.out_size)
    for rad in radii.unique().tolist():
        sel = (radii == rad).nonzero()[:, 0]
        for part in sel.split(_CHUNK):
            sub = lambda d: None if d is None else {  # noqa: E731
                k: v.index_select(0, part) for k, v in d.items()}
            out[part] = _maps_core(
                ctx, table, rstd, img_inds[part], level_ids[part],
                loc_inds[part], labels[part], boxes[part], sub(coefs),
                sub(geo), smooth_radius=int(rad))
    return out


def _maps_core(ctx: _MapsContext, table: Tensor, rstd: Optional[Tensor],
               img_inds: Tensor, level_ids: Tensor, loc_inds: Tensor,
               labels: Tensor, boxes: Tensor, coefs: Optional[Dict] = None,
               geo: Optional[Dict] = None,
               smooth_radius: Optional[int] = None) -> Tensor:
    """The maps from the gather table: tensor ops only, no host sync (what
    :class:`MapsGraphCache` captures). ``coefs`` None: closed-form score
    coefficients from the table's score columns. ``smooth_radius``: the
    smoothing window's padding (default: the widest kernel's radius; at
    least that of every candidate)."""
    geo = geo if geo is not None else _geometry(ctx, level_ids, loc_inds)
    centers = geo['centers']
    if coefs is None:
        coefs = _sigmoid_score_coefficients(ctx.head, ctx.towers, table,
                                            ctx.cols, img_inds, geo['rows'],
                                            geo['anchors'], labels)
    rs = max_kernel_radius([MAX_SIGMA]) if ctx.smoothing == 'gaussian' else 0
    rs = rs if smooth_radius is None else smooth_radius
    r = max(_tower_radius(t) for t in ctx.towers)  # the towers' window
    idx = window_index(ctx.shapes, level_ids, centers, r + rs)
    scales = norm_scales([m for t in ctx.towers for m in t.layers], rstd,
                         level_ids, img_inds, ctx.batch_size)
    grads = [
        _tower_grad(t, coefs, scales, table, ctx.cols, img_inds,
                    _crop(idx, r, r + rs), r) for t in ctx.towers
    ]
    g, r = _sum_windows(grads)
    # the head input has no gradient outside the real map (zero padding);
    # channels last from here on: (N, p, p, C)
    inside = _crop(idx, r, r + rs)[..., None] != flat_table_rows(ctx.shapes)
    g = g.permute(0, 2, 3, 1) * inside
    if ctx.smoothing == 'gaussian' and rs > 0:
        wh = (boxes[:, 2:] - boxes[:, :2]).to(g) / geo['st_xy']  # in cells
        g = _smooth_channels_last(g, box_sigmas(wh), rs)
    fwin = _gather_rows(table, img_inds, idx, 0, ctx.feat_channels)
    m = apply_grad_mode((g * fwin).sum(-1), ctx.grad_mode)  # odam_raw
    scale = (ctx.pad_shape[0] / ctx.out_size[0],
             ctx.pad_shape[1] / ctx.out_size[1])
    return render_patches(m, level_ids, centers, ctx.shapes, ctx.strides,
                          ctx.out_size, scale)


class MapsGraphCache:
    """CUDA graphs of :func:`_maps_core` (Odam-NMS inference on a GPU).

    Keyed by the input size, the candidate bucket (next power of two >= 64;
    the batch is padded with valid dummies, which cannot change the real
    candidates' maps) and the head's constants and parameter addresses;
    captured on a key's second sighting, replayed afterwards
    (:class:`~mmdet_odam.utils.cuda_graphs.CudaGraphCache`).
    """

    def __init__(self, max_graphs: int = 8, min_bucket: int = 64):
        self.cache = CudaGraphCache(max_graphs, min_bucket)

    def clear(self) -> None:
        self.cache.clear()

    def run(self, ctx: _MapsContext, table: Tensor, rstd: Optional[Tensor],
            cands: Candidates) -> Optional[Tensor]:
        """(N, H_o, W_o) maps of ``cands`` (with ``bboxes``) by a captured
        graph, or None (run eagerly)."""
        n, boxes = len(cands), cands.bboxes
        nb = self.cache.bucket(n)
        key = (ctx.key(), nb, tuple(table.shape), table.dtype,
               table.device.index,
               None if rstd is None else tuple(rstd.shape), boxes.dtype)

        def make():
            st = dict(
                table=table.clone(),
                ints=torch.zeros(4, nb, dtype=torch.long,
                                 device=table.device),
                boxes=torch.zeros(nb, 4, dtype=boxes.dtype,
                                  device=table.device))
            if rstd is not None:
                st['rstd'] = rstd.clone()
            return st, lambda: _maps_core(ctx, st['table'], st.get('rstd'),
                                          *st['ints'], st['boxes'])

        entry = self.cache.get(key, make)
        if entry is None:
            return None
        st = entry.static
        st['table'].copy_(table)
        if rstd is not None:
            st['rstd'].copy_(rstd)
        st['ints'][:, :n].copy_(cands.index_tensor())
        st['boxes'][:n].copy_(boxes)
        return entry.replay()[:n].clone()


# the graphs of Odam-NMS inference (``test_cfg.nms.cuda_graph``)
MAPS_GRAPHS = MapsGraphCache()
