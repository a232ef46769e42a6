"""Per-row gradients split by owner: one backward per target instead of one
per row (pure torch).

A detector's post-processing computes each detection's scalars (its score,
its box coordinates) from its own candidate's entries of the head outputs:
the rows of different detections depend on disjoint elements, the rows of
one detection share them. Then the backward of the summed rows of one
target, split by which detection each element belongs to, gives every
row's gradient: ``t`` backwards for ``k`` detections x ``t`` targets
instead of ``k * t``.

Which elements a detection depends on is found, not assumed. A backward
whose upstream gradient is NaN on some rows and 0 on the others leaves NaN
on every element those rows reach through arithmetic (IEEE NaN propagates
through every arithmetic op; backward formulas stop it only by masks and
index selection, where the derivative is structurally zero): a superset of
those rows' gradient support. Each owner gets a code of ``n`` bits with
exactly ``n // 2`` set (``n`` the least with ``C(n, n // 2) >= k``: 5
probes for 10 owners, 9 for 100); one probe per bit, the rows whose owner's
code has that bit, gives each element the bits of the owners that reach
it. An element reached by one owner has exactly that owner's code; one
reached by two owners has the OR of two different codes, more bits than
any code, and an element whose gradient is NaN even for a zero upstream
(``0 * inf``) has all ``n``: then the split declines (``None``) and the
caller takes one backward per row.
Probes must run on a graph without hooks that rewrite NaN gradients.
"""
import itertools
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .windows import gather_windows


def _probe(ys: Tensor, tensors: Sequence[Tensor],
           rows: Tensor) -> List[Optional[Tensor]]:
    """Where a backward with NaN upstream on ``rows`` (bool (N,)) and 0
    elsewhere is NaN: bool per tensor, None for an unused tensor."""
    up = torch.zeros_like(ys).masked_fill(rows, float('nan'))
    gs = torch.autograd.grad(ys, tensors, up, retain_graph=True,
                             allow_unused=True)
    return [None if g is None else g.isnan() for g in gs]


def owner_codes(k: int) -> Tensor:
    """(k, n) bool codes of ``k`` owners, each with exactly ``n // 2``
    bits set (distinct), ``n >= 2`` the least with ``C(n, n // 2) >= k``:
    the OR of two different codes, or all ``n`` bits, has more bits set
    than any code."""
    n = 2
    while math.comb(n, n // 2) < k:
        n += 1
    rows = [c for c in itertools.combinations(range(n), n // 2)][:k]
    codes = torch.zeros(k, n, dtype=torch.bool)
    for i, c in enumerate(rows):
        codes[i, list(c)] = True
    return codes


def owner_maps(ys: Tensor, owners: Tensor, tensors: Sequence[Tensor]
               ) -> Optional[List[Optional[Tensor]]]:
    """The one owner each element of ``tensors`` is reached by.

    One probe per bit of :func:`owner_codes` (NaN upstream on the rows
    whose owner's code has that bit): an element reached by one owner is
    NaN in exactly that owner's bits; one reached by two owners, or NaN
    even for a zero upstream, in more bits than a code has.

    Args:
        ys (Tensor): (N,) rows (graph retained).
        owners (Tensor): (N,) long, the owner of each row, in [0, k).
        tensors (list[Tensor]): tensors on the graph of ``ys``.

    Returns:
        list or None: per tensor an int32 tensor of its shape, the owner of
        each element or -1 where no row reaches it (None for a tensor no
        row uses); None when an element is reached by two owners or is NaN
        for a zero upstream.
    """
    k = int(owners.max()) + 1 if owners.numel() else 0
    codes = owner_codes(max(k, 1)).to(owners.device)
    n, w = codes.shape[1], codes.shape[1] // 2
    # code (as an integer) -> owner
    table = torch.full((1 << n, ), -1, dtype=torch.int32,
                       device=owners.device)
    table[(codes.int() << torch.arange(n, device=owners.device)).sum(1)] = \
        torch.arange(len(codes), dtype=torch.int32, device=owners.device)
    value: List[Optional[Tensor]] = [None] * len(tensors)
    count: List[Optional[Tensor]] = [None] * len(tensors)
    for b in range(n):
        for j, p in enumerate(_probe(ys, tensors, codes[owners, b])):
            if p is None:
                continue
            if value[j] is None:
                value[j] = torch.zeros(p.shape, dtype=torch.int32,
                                       device=p.device)
                count[j] = torch.zeros_like(value[j])
            value[j] |= p.int() << b
            count[j] += p.int()
            if bool((count[j] > w).any()):
                return None  # counts only grow: reached by two owners
    maps: List[Optional[Tensor]] = []
    for v, c in zip(value, count):
        if v is None:
            maps.append(None)
            continue
        if bool(((c != 0) & (c != w)).any()):
            return None
        maps.append(torch.where(c == w, table[v.long()], -1))
    return maps


def owner_ranks(owners: Tensor) -> Tensor:
    """(N,) how many earlier rows have the same owner (rows of one rank
    have distinct owners)."""
    same = owners[:, None] == owners[None, :]
    return torch.tril(same, -1).sum(1)


@dataclass
class OwnedGrads:
    """Every row's gradient w.r.t. ``tensors``, stored as owner maps and
    one summed gradient per rank (see module doc)."""
    owners: Tensor  # (N,)
    ranks: Tensor  # (N,)
    maps: List[Optional[Tensor]]  # per tensor: owner per element, -1 none
    sums: List[List[Optional[Tensor]]]  # per rank, per tensor
    _reach: dict = field(default_factory=dict, repr=False)
    _boxes: dict = field(default_factory=dict, repr=False)

    def reaches(self, j: int) -> Tensor:
        """(k,) bool: the owners that reach tensor ``j``."""
        if j not in self._reach:
            k = int(self.owners.max()) + 1
            hit = torch.zeros(k, dtype=torch.bool, device=self.owners.device)
            if self.maps[j] is not None:
                m = self.maps[j]
                hit[m[m >= 0].unique()] = True
            self._reach[j] = hit
        return self._reach[j]

    def grads(self, rows: Tensor, j: int) -> Optional[Tensor]:
        """(n, *tensor.shape) gradients of ``rows`` w.r.t. tensor ``j``,
        None where no row reaches it."""
        owner_map = self.maps[j]
        if owner_map is None:
            return None
        dtype = next(s[j].dtype for s in self.sums if s[j] is not None)
        parts = []
        for r in rows.tolist():
            s = self.sums[int(self.ranks[r])][j]
            parts.append(owner_map.new_zeros(owner_map.shape, dtype=dtype)
                         if s is None else s * (owner_map == self.owners[r]))
        return torch.stack(parts)

    def boxes(self, j: int) -> Optional[Tensor]:
        """(k, 5) per owner: the image, first / last row and first / last
        column of the elements of tensor ``j`` ((B, C, H, W)) it reaches
        (zeros for an owner that reaches none, see :meth:`reaches`); None
        when ``j`` is not 4-D or an owner reaches two images."""
        if j in self._boxes:
            return self._boxes[j]
        om, res = self.maps[j], None
        if om is not None and om.dim() == 4:
            k = int(self.owners.max()) + 1
            at = (om >= 0).nonzero()  # (P, 4): b, c, y, x
            own = om[om >= 0].long()
            cols = []
            for d in (0, 2, 3):
                v = at[:, d]
                lo = v.new_full((k, ), 1 << 30).scatter_reduce(
                    0, own, v, 'amin')
                hi = v.new_full((k, ), -1).scatter_reduce(0, own, v, 'amax')
                cols.append((lo, hi))
            if bool((cols[0][0] == cols[0][1])[cols[0][1] >= 0].all()):
                none = cols[0][1] < 0
                res = torch.stack([cols[0][1].clamp(min=0)] + [
                    torch.where(none, 0, c) for lo, hi in cols[1:]
                    for c in (lo, hi)], 1)
        self._boxes[j] = res
        return res

    def union_boxes(self, js: Sequence[int]):
        """``(reach (k,), boxes (k, 5))``: whether each owner reaches any
        tensor of ``js`` (all (B, C, H, W) of one size) and the box of
        :meth:`boxes` holding all it reaches; None where a box is None or
        an owner reaches two images."""
        found = [(self.reaches(j), self.boxes(j)) for j in js
                 if self.maps[j] is not None]
        if not found or any(b is None for _, b in found):
            return None
        big = 1 << 30
        reach = torch.stack([r for r, _ in found])  # (J, k)
        box = torch.stack([b for _, b in found])  # (J, k, 5)
        lo = torch.where(reach[..., None], box[..., [1, 3]], big).amin(0)
        hi = torch.where(reach[..., None], box[..., [2, 4]], -1).amax(0)
        img_hi = torch.where(reach, box[..., 0], -1).amax(0)
        img_lo = torch.where(reach, box[..., 0], big).amin(0)
        any_reach = reach.any(0)
        if bool((img_hi != img_lo)[any_reach].any()):
            return None
        boxes = torch.stack([img_hi, lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]],
                            1)
        return any_reach, torch.where(any_reach[:, None], boxes, 0)

    def window_grads(self, rows: Tensor, j: int, place) -> Optional[Tensor]:
        """(n, C, h, w) gradients of ``rows`` w.r.t. tensor ``j`` in
        windows ``place`` = ``(img, y0, x0, (h, w))`` (one per row, inside
        the map); None where no row reaches the tensor."""
        om = self.maps[j]
        if om is None:
            return None
        img, y0, x0, size = place
        ranks = self.ranks[rows]
        out = None
        for rank in ranks.unique().tolist():
            s = self.sums[int(rank)][j]
            if s is None:
                continue
            sel = (ranks == rank).nonzero().squeeze(1)
            at = (img[sel], y0[sel], x0[sel], size)
            mine = gather_windows(om, *at) == self.owners[rows[sel]].to(
                om.dtype)[:, None, None, None]
            if out is None:
                out = s.new_zeros(len(rows), s.shape[1], *size)
            out[sel] = gather_windows(s, *at) * mine
        return out


def split_by_owner(ys: Tensor, owners: Tensor, tensors: Sequence[Tensor]
                   ) -> Optional[OwnedGrads]:
    """Gradients of all rows of ``ys`` w.r.t. ``tensors`` from
    the probes of :func:`owner_maps` and one backward per rank, or None
    where the
    owners' elements are not disjoint (see module doc).

    Args:
        ys (Tensor): (N,) rows (graph retained; no NaN-rewriting hooks).
        owners (Tensor): (N,) long owner of each row, in [0, k).
        tensors (list[Tensor]): tensors on the graph of ``ys``.
    """
    owners = owners.to(device=ys.device, dtype=torch.long)
    if owners.shape != ys.shape:
        raise ValueError(f'owners {tuple(owners.shape)} and rows '
                         f'{tuple(ys.shape)} differ in shape')
    maps = owner_maps(ys, owners, tensors)
    if maps is None:
        return None
    ranks = owner_ranks(owners)
    sums = []
    for rank in range(int(ranks.max()) + 1 if ranks.numel() else 0):
        up = (ranks == rank).to(ys.dtype)
        sums.append(list(torch.autograd.grad(ys, tensors, up,
                                             retain_graph=True,
                                             allow_unused=True)))
    return OwnedGrads(owners, ranks, maps, sums)
