"""Gradients of a local map by re-running it on crops (pure torch).

A dense head's tower of one level (convolutions of stride 1 with "same"
padding, eval BatchNorm, activations, per-channel scales) computes the
outputs at a position from the inputs within a fixed radius of it. One
backward per detection through the whole level map spends almost all its
time on zeros: the gradient of a detection is non-zero only within that
radius of the positions its scores and box come from. Running the tower on
a crop of the input around those positions, and back-propagating there,
gives the same gradient at a fraction of the cost, and all the detections'
crops go through the tower as one batch.

That the map is local is proved on the autograd graph of the full
forward (:func:`receptive_radius`: every node on a path from the input
to the outputs is a known local op, and the radius is the sum of the
convolutions' along the longest path); that the crop forward is the same function there
is checked on every call (its outputs equal the full map's at the
positions that carry gradient). Otherwise the crop path declines and the
caller takes the full-map backward.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .grads import batched_vjp
from .windows import Windows, gather_windows

#: Elementwise backward nodes (any broadcast of an operand that does not
#: reach the input, e.g. a per-channel scale, keeps the map local).
ELEMENTWISE = frozenset(
    'Relu LeakyRelu Silu Sigmoid Tanh Hardtanh Hardswish Hardsigmoid Elu '
    'Gelu Softplus Mish Exp Clamp ClampMin ClampMax Mul Add Sub Div Neg '
    'Abs Clone ToCopy Where AddcMul Rsub'.split())
#: Nodes that select or join channels: local when their dim is 1.
CHANNEL_OPS = frozenset('Slice Cat Split SplitWithSizes'.split())
#: Eval-mode batch norm: a per-channel affine map.
BATCH_NORMS = frozenset(
    'NativeBatchNorm CudnnBatchNorm NativeBatchNormLegitNoTraining'.split())


def _op(node) -> str:
    """``'ReluBackward0'`` -> ``'Relu'``."""
    return re.sub(r'Backward\d*$', '', type(node).__name__)


class NotLocal(Exception):
    """The map is not proved local; the message says why."""


def _conv_radius(node) -> Tuple[int, int]:
    stride = tuple(node._saved_stride)
    pad = tuple(node._saved_padding)
    dil = tuple(node._saved_dilation)
    k = tuple(node._saved_weight.shape[2:])
    if node._saved_transposed or len(k) != 2 or any(s != 1 for s in stride):
        raise NotLocal(f'a convolution of stride {stride} (transposed: '
                       f'{bool(node._saved_transposed)})')
    if any(2 * p != d * (kk - 1) for p, d, kk in zip(pad, dil, k)):
        raise NotLocal(f'a {k} convolution with padding {pad} does not '
                       'keep the map size')
    return int(pad[0]), int(pad[1])


def _check_local(node, op: str) -> Tuple[int, int]:
    """The radius (ry, rx) ``node`` (on a path from the input) adds, or
    :class:`NotLocal` where it does not map each position from the
    input's cells within a radius."""
    if op == 'Convolution':
        return _conv_radius(node)
    if op in BATCH_NORMS:
        if getattr(node, '_saved_training', False):
            raise NotLocal('batch norm in training mode')
    elif op in CHANNEL_OPS:
        if int(getattr(node, '_saved_dim', -1)) != 1:
            raise NotLocal(f'{op} over dim {node._saved_dim}')
    elif op not in ELEMENTWISE:
        raise NotLocal(f'op {type(node).__name__} is not known to be local')
    return 0, 0


def receptive_radius(outputs: Sequence[Tensor], leaf: Tensor,
                     others: Sequence[Tensor] = ()
                     ) -> Optional[Tuple[int, int]]:
    """(ry, rx): every output at a position depends on ``leaf`` within
    this many cells of it, proved on the autograd graph of ``outputs``;
    None when no output depends on ``leaf``.

    Args:
        outputs (list[Tensor]): (B, C_o, H, W), computed from ``leaf``.
        leaf (Tensor): (B, C, H, W) leaf tensor that requires grad.
        others (list[Tensor]): other leaves the outputs must not reach.

    Raises:
        NotLocal: a node of unknown or non-local kind (group norm,
            deformable convolution, pooling, resizing...), an output that
            does not keep ``leaf``'s size, or a path to ``others``.
    """
    other_ids = {id(t) for t in others}
    memo: dict = {}

    def radius(node) -> Optional[Tuple[int, int]]:  # None: no path to leaf
        if node is None:
            return None
        if node in memo:
            return memo[node]
        var = getattr(node, 'variable', None)
        if var is not None:  # AccumulateGrad
            if id(var) in other_ids:
                raise NotLocal('the outputs depend on another input level')
            res = (0, 0) if var is leaf else None
            memo[node] = res
            return res
        op, nexts = _op(node), [n for n, _ in node.next_functions]
        follow = nexts
        if op == 'Convolution' or op in BATCH_NORMS:
            follow = nexts[:1]  # the input; weights must not reach it
            if any(radius(n) is not None for n in nexts[1:]):
                raise NotLocal(f'{op} parameters computed from the input')
        below = [r for r in (radius(n) for n in follow) if r is not None]
        res = None
        if below:  # only what reaches the input must be local
            own = _check_local(node, op)
            res = (own[0] + max(r[0] for r in below),
                   own[1] + max(r[1] for r in below))
        memo[node] = res
        return res

    best = None
    for out in outputs:
        if out.dim() != 4 or out.shape[0] != leaf.shape[0] or \
                out.shape[-2:] != leaf.shape[-2:]:
            raise NotLocal(f'an output of shape {tuple(out.shape)} for an '
                           f'input of shape {tuple(leaf.shape)}')
        r = radius(out.grad_fn)
        if r is not None:
            best = r if best is None else (max(best[0], r[0]),
                                           max(best[1], r[1]))
    return best


def support_boxes(support: Tensor) -> Tensor:
    """(m, 5) image, first / last row, first / last column of the cells
    of each row's support ((m, B, H, W) bool; one image per row, the
    first that has any; an empty support gives the cell (0, 0))."""
    m, _, hh, ww = support.shape
    img = support.flatten(2).any(2).float().argmax(1)
    own = support[torch.arange(m, device=support.device), img]  # (m, H, W)
    cols = [img]
    for axis, n in ((0, hh), (1, ww)):
        hit = own.any(2 - axis)  # (m, n)
        idx = torch.arange(n, device=support.device)
        lo = torch.where(hit, idx, n).amin(1)
        hi = torch.where(hit, idx, -1).amax(1)
        empty = hi < 0
        cols += [torch.where(empty, 0, lo), torch.where(empty, 0, hi)]
    return torch.stack(cols, 1)


def grow_boxes(boxes: Tensor, radius: Tuple[int, int],
               hw: Tuple[int, int]):
    """One (h, w) window per row holding its box grown by ``radius``,
    shifted inside the map (so a window edge closer than the radius is the
    map's own border).

    Args:
        boxes (Tensor): (m, 5) from :func:`support_boxes`.

    Returns:
        tuple: ``img`` (m,), ``y0`` (m,), ``x0`` (m,), ``(h, w)``.
    """
    corners, size = [], []
    for axis, (n, r) in enumerate(zip(hw, radius)):
        lo, hi = boxes[:, 1 + 2 * axis], boxes[:, 2 + 2 * axis]
        ext = int((hi - lo + 1).max()) if len(boxes) else 1
        s = min(int(n), ext + 2 * int(r))
        corners.append((lo - r).clamp(min=0).clamp(max=int(n) - s))
        size.append(s)
    return boxes[:, 0], corners[0], corners[1], (size[0], size[1])


@dataclass
class CroppedLevel:
    """Vector-Jacobian products of ``outputs`` w.r.t. ``leaf`` by crops.

    Args:
        forward (callable): crops (m, C, h, w) -> the outputs' values on
            them, [(m, C_o, h, w)] in the order of ``outputs``.
        leaf (Tensor): (B, C, H, W) the input of the full map.
        outputs (list[Tensor]): (B, C_o, H, W) the full map's outputs.
        radius (tuple): (ry, rx) from :func:`receptive_radius`.
        max_fraction (float): crops larger than this fraction of the map
            decline (the full backward costs about as much).
    """

    forward: Callable[[Tensor], Sequence[Tensor]]
    leaf: Tensor
    outputs: Sequence[Tensor]
    radius: Tuple[int, int]
    max_fraction: float = 0.5
    declined: Optional[str] = field(default=None)
    #: calls that took the crops (for reports)
    taken: int = 0
    kind = 'crops'
    #: legacy vmap (``is_grads_batched``) has no batching rule for
    #: convolution_backward: one backward per batch slot of the windows
    _vmap_state: dict = field(default_factory=lambda: {'loop': True},
                              repr=False)

    def windows(self, boxes: Tensor):
        """``(img, y0, x0, (h, w))`` of the crops for support ``boxes``
        ((m, 5), :func:`support_boxes`), or None where they are larger
        than ``max_fraction`` of the map."""
        hw = tuple(self.leaf.shape[-2:])
        img, y0, x0, size = grow_boxes(boxes, self.radius, hw)
        if size[0] * size[1] > self.max_fraction * hw[0] * hw[1]:
            return None
        return img, y0, x0, size

    def _leaf_index(self, leaves) -> Optional[int]:
        if self.declined is not None:
            return None
        return next((i for i, lf in enumerate(leaves) if lf is self.leaf),
                    None)

    def owned_vjp(self, owned, rows: Tensor, js: Sequence[int], mids,
                  leaves) -> Optional[list]:
        """Second stage (:func:`~mmdet_odam.core.staged_row_grads`) with
        the upstream of ``rows`` taken from an
        :class:`~mmdet_odam.core.OwnedGrads` in windows (no dense
        first-stage gradients): ``[(leaf index, Windows)]`` (empty when no
        row reaches the level or all its gradients are zero), or None
        where the windows do not apply."""
        k = self._leaf_index(leaves)
        got = None if k is None else owned.union_boxes(js)
        if got is None:
            return None
        reach, boxes = got
        sel = reach[owned.owners[rows]].nonzero().squeeze(1)
        if len(sel) == 0:
            return []
        place = self.windows(boxes[owned.owners[rows[sel]]])
        if place is None:
            return None
        j_of = {id(mids[j]): j for j in js}
        ups = [None if id(o) not in j_of else
               owned.window_grads(rows[sel], j_of[id(o)], place)
               for o in self.outputs]
        live = torch.stack([u.flatten(1).ne(0).any(1) for u in ups
                            if u is not None]).any(0)
        if not bool(live.any()):
            return []
        keep = live.nonzero().squeeze(1)
        place = tuple(p[keep] for p in place[:3]) + (place[3], )
        part = self.vjp_at(place, [None if u is None else u[keep]
                                   for u in ups])
        if part is None:
            return None
        part.rows = sel[keep]
        return [(k, part)]

    def dense_vjp(self, sel: Tensor, grads_by_id: dict,
                  leaves) -> Optional[list]:
        """Second stage from dense first-stage gradients of rows ``sel``
        (``{id(output): (m, B, C_o, H, W)}``): ``[(leaf index, Windows)]``
        or None where the crops decline."""
        k = self._leaf_index(leaves)
        part = None if k is None else self.vjp(
            [grads_by_id.get(id(o)) for o in self.outputs])
        if part is None:
            return None
        part.rows = sel
        return [(k, part)]

    def vjp(self, grads: Sequence[Optional[Tensor]]) -> Optional[Windows]:
        """Gradients for dense upstream ``grads`` ((m, B, C_o, H, W) per
        output, None for zero) as :class:`Windows` of (m, B, C, H, W), or
        None where the crops decline (see :meth:`vjp_at`)."""
        if self.declined is not None:
            return None
        used = [g for g in grads if g is not None]
        if not used:
            return None
        support = torch.stack([g.ne(0).any(2) for g in used]).any(0)
        place = self.windows(support_boxes(support))
        if place is None:
            return None
        rows = torch.arange(len(place[0]), device=support.device)
        ups = [None if g is None else gather_windows(g, *place, rows=rows)
               for g in grads]
        return self.vjp_at(place, ups)

    def vjp_at(self, place, ups: Sequence[Optional[Tensor]]
               ) -> Optional[Windows]:
        """Gradients for upstream ``ups`` given in windows ((m, C_o, h, w)
        per output at ``place`` = ``(img, y0, x0, (h, w))`` of
        :meth:`windows`; zero outside), as :class:`Windows` at the same
        place; None where the crop forward is not the full map's
        (``self.declined`` says why, and later calls decline too).

        Rows whose windows coincide (the targets of one detection) share
        one crop: the forward runs once per window and the backward is
        batched over the rows of a window."""
        if self.declined is not None:
            return None
        img, y0, x0, size = place
        used = [k for k, u in enumerate(ups) if u is not None]
        keys, win = torch.unique(torch.stack([img, y0, x0], 1), dim=0,
                                 return_inverse=True)
        crops = gather_windows(self.leaf.detach(), keys[:, 0], keys[:, 1],
                               keys[:, 2], size)
        crops = crops.contiguous().requires_grad_(True)
        try:
            with torch.enable_grad():
                outs = list(self.forward(crops))
        except Exception as e:  # noqa: BLE001  (a head that needs its map)
            self.declined = (f'the forward on crops failed: '
                             f'{type(e).__name__}: {e}')
            return None
        mask = torch.stack([ups[k].ne(0).any(1) for k in used]).any(0)
        shared = mask.new_zeros(len(keys), *size).index_put_(
            (win, ), mask, accumulate=True)
        if not self._same_outputs(outs, shared, keys, size):
            return None
        slot = _rank_within(win)  # row r: batch slot of its window
        batched = []
        for k in used:
            up = ups[k].new_zeros(int(slot.max()) + 1, len(keys),
                                  *ups[k].shape[1:])
            up[slot, win] = ups[k]
            batched.append(up)
        g = batched_vjp([outs[k] for k in used], [crops], batched,
                        self._vmap_state)[0][slot, win]  # (m, C, h, w)
        self.taken += 1
        return Windows(img, y0, x0, g, tuple(self.leaf.shape))

    def _same_outputs(self, outs: List[Tensor], mask: Tensor, keys: Tensor,
                      size) -> bool:
        """Whether the crop outputs equal the full ones at ``mask`` ((U, h,
        w) bool, where gradient flows in each window ``keys`` (U, 3): image,
        y0, x0), else records why in ``declined``."""
        if len(outs) != len(self.outputs):
            self.declined = (f'the crop forward gave {len(outs)} outputs, '
                             f'not {len(self.outputs)}')
            return False
        for k, (crop, full) in enumerate(zip(outs, self.outputs)):
            if crop.shape[0] != len(keys) or \
                    crop.shape[1:2] != full.shape[1:2] or \
                    tuple(crop.shape[-2:]) != tuple(size):
                self.declined = (f'crop output {k} has shape '
                                 f'{tuple(crop.shape)}')
                return False
            ref = gather_windows(full.detach(), keys[:, 0], keys[:, 1],
                                 keys[:, 2], size)
            a = crop.detach().permute(0, 2, 3, 1)[mask]
            b = ref.permute(0, 2, 3, 1)[mask].to(a.dtype)
            tol = 1e-4 * float(b.abs().max()) if b.numel() else 0.0
            if not torch.allclose(a, b, rtol=1e-4, atol=tol + 1e-12):
                err = float((a - b).abs().max())
                self.declined = (f'crop output {k} differs from the full '
                                 f'map by {err:.3g} where gradient flows')
                return False
        return True


def _rank_within(groups: Tensor) -> Tensor:
    """(m,) the rank of each element among the elements of its group
    (``groups`` (m,) int): 0 for the first, 1 for the second..."""
    order = torch.argsort(groups, stable=True)
    sorted_g = groups[order]
    start = torch.searchsorted(sorted_g, sorted_g, right=False)
    rank = torch.empty_like(groups)
    rank[order] = torch.arange(len(groups), device=groups.device) - start
    return rank
