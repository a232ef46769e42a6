"""The "reversed head": batched ``cls`` ODAM maps of dense-head candidates
from the head's own forward (paper App. A.1; the authors' FCOS code).

The confidence score of a candidate at cell (y, x) of level l depends on the
head input F only through the conv towers. With the norm statistics of the
forward frozen (as in the patch path of :mod:`.dense`), the backward of a
tower layer ``a = act(norm(conv(x)))`` is linear:
``dx = conv_transpose(D * da, W)``, ``D = act'(.) * gamma / sigma``, and
``D`` is known from the forward (ReLU masks, per-image GN statistics). So:

1. the forward is run once with :func:`record_towers` (the predict / loss
   forward itself: no second forward), which keeps every tower layer's ``D``
   per level;
2. the gradient of each candidate's score w.r.t. its prediction-conv outputs
   is a vector (autograd on a few scalars);
3. that vector is pushed back through the prediction convs and the tower
   layers with ``conv_transpose2d`` on (2R+1)^2 windows, all candidates of
   all levels in one batch (the head's convs are shared by the levels);
4. map = grad-mode(sum_c F_c * smooth(g_c)) on the window, rendered on the
   output grid by :func:`~mmdet_odam.core.render_patches`.

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
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import (apply_grad_mode, box_sigmas,
                    gaussian_kernels1d, max_kernel_radius, render_patches)
from ..core.smoothing import MAX_SIGMA, MIN_SIGMA, band_matrices
from .base import HookList
from .targets import Target


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
    """What the backward of every tower layer needs, per level.

    Attributes:
        masks (dict): ``(id(layer), level) -> (B, C, h, w)`` activation
            derivative (ReLU mask, float; absent without activation).
        scales (dict): ``(id(layer), level) -> (B, C)`` norm derivative
            ``gamma / sigma`` (absent without norm); differentiable w.r.t.
            gamma, statistics detached.
        outs (tuple): the head's outputs, as ``head(feats)`` returns them.
    """
    masks: Dict = field(default_factory=dict)
    scales: Dict = field(default_factory=dict)
    outs: tuple = ()
    _tables: Dict = field(default_factory=dict, repr=False)

    def mask_table(self, layer: nn.Module, num_levels: int) -> Tensor:
        """:func:`flat_table` of a layer's masks over the levels (cached)."""
        key = id(layer)
        if key not in self._tables:
            self._tables[key] = flat_table(
                [self.masks[(key, lvl)] for lvl in range(num_levels)])
        return self._tables[key]

    def scale_table(self, layer: nn.Module, num_levels: int) -> Tensor:
        """(L, B, C) norm derivatives of a layer over the levels."""
        return torch.stack(
            [self.scales[(id(layer), lvl)] for lvl in range(num_levels)])


def _norm_scale(norm: nn.Module, x: Tensor) -> Tensor:
    """(B, C) d norm(x) / dx with the statistics of ``x`` frozen."""
    b, c = x.shape[:2]
    if isinstance(norm, nn.GroupNorm):
        xr = x.detach().reshape(b, norm.num_groups, -1)
        var = xr.var(-1, unbiased=False)
        inv = torch.rsqrt(var + norm.eps).repeat_interleave(
            c // norm.num_groups, dim=1)
    else:  # eval BatchNorm
        inv = torch.rsqrt(norm.running_var + norm.eps)[None].expand(b, c)
    if norm.affine:
        inv = inv * norm.weight[None]
    return inv


def _frozen_group_norm(mod, inp, out):
    """GroupNorm output with detached statistics (same value)."""
    x = inp[0]
    xr = x.reshape(x.shape[0], mod.num_groups, -1)
    m = xr.mean(-1, keepdim=True).detach()
    v = xr.var(-1, unbiased=False, keepdim=True).detach()
    y = ((xr - m) * torch.rsqrt(v + mod.eps)).reshape(x.shape)
    if mod.affine:
        y = y * mod.weight[None, :, None, None] + \
            mod.bias[None, :, None, None]
    return y


def forward_recording(head: nn.Module, feats: Sequence[Tensor],
                      towers: Optional[List[Tower]] = None,
                      freeze_norm: bool = False):
    """``head(feats)`` that also returns a :class:`TowerRecord`.

    Hooks live for this call only. Gradients flow as in ``head(feats)``;
    with ``freeze_norm`` the towers' GroupNorm statistics are detached (same
    values), so maps differentiated with ``create_graph`` get the patch
    path's derivative (frozen statistics throughout; Odam-Train uses it).
    """
    towers = towers if towers is not None else reversed_head_spec(head)
    if towers is None:
        raise NotImplementedError(
            f'the reversed head does not support {type(head).__name__}')
    rec = TowerRecord()
    calls: Dict[int, int] = {}
    hooks = HookList()

    def norm_hook(layer):
        def hook(mod, inp, out):
            lvl = calls.get(id(layer), 0)
            rec.scales[(id(layer), lvl)] = _norm_scale(mod, inp[0])
        return hook

    def layer_hook(mod, inp, out):
        lvl = calls.get(id(mod), 0)
        calls[id(mod)] = lvl + 1
        if mod.with_activation:
            rec.masks[(id(mod), lvl)] = (out.detach() > 0).to(out.dtype)
        if mod.with_norm and isinstance(mod.norm,
                                        nn.modules.batchnorm._BatchNorm):
            rec.scales[(id(mod), lvl)] = _norm_scale(mod.norm, out)

    try:
        for t in towers:
            for layer in t.layers:
                hooks.forward(layer, layer_hook)
                if layer.with_norm and isinstance(layer.norm, nn.GroupNorm):
                    if freeze_norm:
                        hooks.forward(layer.norm, _frozen_group_norm)
                    hooks.forward(layer.norm, norm_hook(layer))
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


def window_index(level_shapes, level_ids: Tensor, centers: Tensor,
                 radius: int) -> Tensor:
    """(N, P, P) rows of :func:`flat_table` for each candidate's window of
    radius ``radius`` on its level; cells outside the level map point to
    the zero row."""
    dev = centers.device
    hw = torch.as_tensor([[int(h), int(w)] for h, w in level_shapes],
                         device=dev)
    offs = torch.cat([hw.new_zeros(1), (hw[:, 0] * hw[:, 1]).cumsum(0)])
    h, w = hw[level_ids, 0:1], hw[level_ids, 1:2]
    ar = torch.arange(-radius, radius + 1, device=dev)
    ys, xs = centers[:, :1] + ar, centers[:, 1:] + ar  # (N, P)
    inside = ((ys >= 0) & (ys < h))[:, :, None] & \
        ((xs >= 0) & (xs < w))[:, None, :]
    idx = offs[level_ids][:, None, None] + ys[:, :, None] * w[:, :, None] \
        + xs[:, None, :]
    return torch.where(inside, idx, offs[-1])


def _gather_cells(level_maps: Sequence[Tensor], img_inds: Tensor,
                  level_ids: Tensor, cells: Tensor) -> Tensor:
    """(N, C) values of each candidate's cell (flat index) on its level."""
    flat = [m.flatten(2) for m in level_maps]
    offs = torch.as_tensor([0] + [f.shape[-1] for f in flat[:-1]],
                           device=cells.device).cumsum(0)
    return torch.cat(flat, 2)[img_inds, :, offs[level_ids] + cells]


def _score_coefficients(head, outs, towers, img_inds, level_ids, cells,
                        anchors, labels, priors, strides, create_graph):
    """d score / d prediction-conv outputs of each candidate.

    Returns:
        tuple: dict ``out index -> (N, channels)`` and the decoded boxes.
    """
    from .dense import candidate_scalars
    vecs = [_gather_cells(o, img_inds, level_ids, cells) for o in outs]
    needed = sorted({k for t in towers for k, _ in t.preds})
    with torch.enable_grad():
        ins = [v if (create_graph and v.requires_grad) else
               v.detach().requires_grad_(True) for v in vecs]
        ys = candidate_scalars(head, ins[0], ins[1],
                               ins[2] if len(ins) > 2 else None, anchors,
                               labels, priors, strides)
        grads = torch.autograd.grad(
            ys[Target.CLS].sum(), [ins[k] for k in needed],
            create_graph=create_graph, allow_unused=True)
    coefs = {k: (g if g is not None else torch.zeros_like(ins[k]))
             for k, g in zip(needed, grads)}
    if not create_graph:
        coefs = {k: g.detach() for k, g in coefs.items()}
    return coefs, ys['boxes'].detach()


def _tower_grad(tower: Tower, coefs, rec: TowerRecord, img_inds, level_ids,
                centers, shapes) -> Tuple[Tensor, int]:
    """Gradient of the candidates' scores w.r.t. the tower input, on each
    candidate's window: (N, C, P, P) and its radius."""
    preds = [(k, c, _same_conv_radius(c)) for k, c in tower.preds]
    r = max(pr for *_, pr in preds)  # common window of the prediction convs
    g = sum(
        F.pad(
            F.conv_transpose2d(coefs[k][:, :, None, None], conv.weight,
                               dilation=conv.dilation), (r - pr, ) * 4)
        for k, conv, pr in preds)
    for layer in reversed(tower.layers):
        if layer.with_activation:
            idx = window_index(shapes, level_ids, centers, r)
            d = rec.mask_table(layer, len(shapes))[img_inds[:, None, None],
                                                   idx]
            g = g * d.permute(0, 3, 1, 2)
        if layer.with_norm:
            sc = rec.scale_table(layer, len(shapes))[level_ids, img_inds]
            g = g * sc[:, :, None, None]
        conv = layer.conv
        g = F.conv_transpose2d(g, conv.weight, dilation=conv.dilation)
        r += _same_conv_radius(conv)
    return g, r


def _smooth_channels_last(g: Tensor, sigmas: Tensor, pad: int) -> Tensor:
    """:func:`~mmdet_odam.core.gaussian_smooth` (with ``pad``) of (N, p, p,
    C) windows as two batched matmuls: (N, p + 2 pad, p + 2 pad, C)."""
    n, p, _, c = g.shape
    if pad == 0 or not bool((sigmas >= MIN_SIGMA).any()):
        return F.pad(g, (0, 0, pad, pad, pad, pad))
    k = gaussian_kernels1d(sigmas).to(g)
    q = p + 2 * pad
    band = band_matrices(k, q, p, pad)  # (N, q, p), same for y and x
    t = torch.bmm(band, g.reshape(n, p, p * c)).reshape(n, q, p, c)
    t = t.reshape(n * q, p, c)
    bx = band[:, None].expand(n, q, q, p).reshape(n * q, q, p)
    return torch.bmm(bx, t).reshape(n, q, q, c)


def reversed_head_maps(head: nn.Module, feats: Sequence[Tensor],
                       rec: TowerRecord, img_inds: Tensor, level_ids: Tensor,
                       loc_inds: Tensor, labels: Tensor, priors: Tensor,
                       out_size, pad_shape, smoothing: str = 'gaussian',
                       grad_mode='pos_relu', boxes: Optional[Tensor] = None,
                       create_graph: bool = False,
                       towers: Optional[List[Tower]] = None) -> Tensor:
    """``cls`` ODAM maps of N dense-head candidates by the reversed head.

    Args:
        head: supported dense head (:func:`reversed_head_spec`).
        feats (list[Tensor]): head inputs (B, C, h_l, w_l).
        rec (TowerRecord): from :func:`forward_recording` on ``feats``.
        img_inds, level_ids, loc_inds, labels (Tensor): (N,) candidates.
        priors (Tensor): (N, 2 | 4) the candidates' priors.
        out_size (tuple): (H_o, W_o) grid covering ``pad_shape``.
        pad_shape (tuple): padded network input (H, W).
        smoothing (str): ``'gaussian'`` or ``'none'`` (parsed value).
        grad_mode: see :mod:`mmdet_odam.explainers.targets`.
        boxes (Tensor, optional): (N, 4) input-pixel boxes sizing the
            smoothing kernel (default: the decoded candidate boxes).
        create_graph (bool): differentiable through the gradient.

    Returns:
        Tensor: (N, H_o, W_o) raw maps.
    """
    from .dense import _level_strides, _num_priors
    towers = towers if towers is not None else reversed_head_spec(head)
    n = labels.shape[0]
    if n == 0:
        return feats[0].new_zeros(0, int(out_size[0]), int(out_size[1]))
    a = _num_priors(head)
    shapes = [f.shape[-2:] for f in feats]
    cells, anchors = loc_inds // a, loc_inds % a
    widths = torch.as_tensor([f.shape[-1] for f in feats],
                             device=labels.device)[level_ids]
    centers = torch.stack([cells // widths, cells % widths], 1)
    strides = _level_strides(head)
    st = torch.as_tensor([s[1] for s in strides],
                         device=labels.device)[level_ids]
    coefs, dec = _score_coefficients(head, rec.outs, towers, img_inds,
                                     level_ids, cells, anchors, labels,
                                     priors, st, create_graph)
    grads = [
        _tower_grad(t, coefs, rec, img_inds, level_ids, centers, shapes)
        for t in towers
    ]
    r = max(rt for _, rt in grads)  # common window of the towers
    g = sum(F.pad(gt, (r - rt, ) * 4) for gt, rt in grads)
    rs = max_kernel_radius([MAX_SIGMA]) if smoothing == 'gaussian' else 0
    idx = window_index(shapes, level_ids, centers, r + rs)
    fwin = flat_table(feats)[img_inds[:, None, None], idx]  # (N, P, P, C)
    # the head input has no gradient outside the real map (zero padding);
    # channels last from here on: (N, p, p, C)
    p = 2 * r + 1
    inside = idx[:, rs:rs + p, rs:rs + p, None] != flat_table_rows(shapes)
    g = g.permute(0, 2, 3, 1) * inside.to(g)
    if smoothing == 'gaussian':
        sb = dec if boxes is None else boxes.to(dec)
        cell = torch.as_tensor(strides, dtype=sb.dtype,
                               device=sb.device)[level_ids]  # (N, (sy, sx))
        wh = torch.stack([(sb[:, 2] - sb[:, 0]) / cell[:, 1],
                          (sb[:, 3] - sb[:, 1]) / cell[:, 0]], 1)
        g = _smooth_channels_last(g, box_sigmas(wh), rs)
    m = apply_grad_mode((g * fwin).sum(-1), grad_mode)  # odam_raw
    scale = (pad_shape[0] / out_size[0], pad_shape[1] / out_size[1])
    return render_patches(m, level_ids, centers, shapes, strides, out_size,
                          scale)
