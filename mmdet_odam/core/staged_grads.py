"""Per-row gradients in two stages, through intermediate tensors that
separate the graph (pure torch).

A dense head's detections depend on its input levels only through the
head's per-level outputs, and each detection through the outputs of its
own level only. One backward per detection from its score to the levels
still runs every level's tower (autograd sends zeros through the levels the
detection does not use). Two stages avoid that:

1. the gradient of each row w.r.t. the intermediate tensors (the head's
   outputs): a backward through the post-processing only;
2. per group of intermediate tensors (one level), from the group to the
   leaves, batched over the rows whose stage-1 gradient is non-zero on
   that group.

Exact (the chain rule, summed over groups) when every path from the rows to
the leaves passes through the intermediate tensors;
:func:`only_through` checks that on the graph and callers take the plain
path otherwise.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .grads import batched_vjp, row_grads
from .windows import Windows


def _stop_nodes(stops: Sequence[Tensor]) -> set:
    """grad_fn nodes all of whose outputs are among ``stops``."""
    outs: dict = {}
    for t in stops:
        if t.grad_fn is not None:
            outs.setdefault(t.grad_fn, set()).add(t.output_nr)
    full = set()
    for node, nrs in outs.items():
        n_out = len(getattr(node, '_input_metadata', ()) or ())
        if n_out and nrs >= set(range(n_out)):
            full.add(node)
    return full


def only_through(ys: Tensor, stops: Sequence[Tensor],
                 leaves: Sequence[Tensor]) -> bool:
    """Whether every path of the autograd graph of ``ys`` to ``leaves``
    passes through a tensor of ``stops`` (a node producing other tensors
    as well does not count as a stop)."""
    stop = _stop_nodes(stops)
    if not stop:
        return False
    leaf_ids = {id(lf) for lf in leaves}
    seen, stack = set(), [ys.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        var = getattr(node, 'variable', None)
        if var is not None and id(var) in leaf_ids:
            return False
        stack.extend(n for n, _ in node.next_functions)
    return True


def group_tensors(groups: Sequence[Sequence[Tensor]]) -> List[Tensor]:
    """The tensors of ``groups`` that require grad, in order (the tensors
    of the first stage)."""
    return [t for g in groups for t in g if t.requires_grad]


def _nonzero_rows(first: dict):
    """From first-stage gradients ``{j: (n, *shape) or None}`` of some
    rows: the rows non-zero on any of them (positions (m,)) and their
    gradients ``{j: (m, *shape)}`` (empty when none)."""
    used = {j: g for j, g in first.items() if g is not None}
    if not used:
        return None, {}
    hit = torch.stack([g.flatten(1).ne(0).any(1)
                       for g in used.values()]).any(0)
    sel = hit.nonzero().squeeze(1)
    if len(sel) == 0:
        return sel, {}
    return sel, {j: g[sel] for j, g in used.items()}


def _owned_rows(owned, rows: Tensor, js: Sequence[int]):
    """As :func:`_nonzero_rows`, from an
    :class:`~mmdet_odam.core.OwnedGrads`: only the gradients of the rows
    whose owner reaches a tensor of ``js`` are built (a probe may reach
    where the gradient is zero), then the non-zero ones kept."""
    if not js:
        return None, {}
    hit = torch.stack([owned.reaches(j) for j in js]).any(0)
    sel = hit[owned.owners[rows]].nonzero().squeeze(1)
    if len(sel) == 0:
        return sel, {}
    nonzero, used = _nonzero_rows({j: owned.grads(rows[sel], j) for j in js})
    return (None, {}) if nonzero is None else (sel[nonzero], used)


def staged_row_grads(ys: Tensor, leaves: Sequence[Tensor],
                     groups: Sequence[Sequence[Tensor]], rows: Tensor,
                     state: Optional[dict] = None
                     ) -> List[Optional[Tensor]]:
    """Gradients of ``ys[rows]`` w.r.t. each leaf, through ``groups``.

    Args:
        ys (Tensor): (N,) scalar targets (graph retained).
        leaves (list[Tensor]): tensors the gradients are taken w.r.t.
        groups (list[list[Tensor]]): intermediate tensors, grouped (e.g.
            one group per head level); every path from ``ys`` to the
            leaves must pass through them (:func:`only_through`).
        rows (Tensor): (n,) rows of ``ys``.
        state (dict, optional): shared between calls (vmap fallbacks);
            ``state['owned']``, an :class:`~mmdet_odam.core.OwnedGrads` of
            ``ys`` w.r.t. the groups' tensors, gives the first stage
            without a backward; ``state['local']``, ``{group index:
            second stage}``, takes the second stage of that group without
            autograd where it fits: an object with ``owned_vjp(owned,
            rows, js, mids, leaves)`` and ``dense_vjp(sel, grads_by_id,
            leaves)``, each giving ``[(leaf index, Windows)]`` or None to
            decline (e.g. :class:`~mmdet_odam.core.CroppedLevel`).

    Returns:
        list: (n, *leaf.shape) per leaf, or None for a leaf no row uses
        (same as :func:`~mmdet_odam.core.row_grads`); a leaf reached
        through windowed second stages alone gets the list of their
        :class:`~mmdet_odam.core.windows.Windows` instead (their sum).
    """
    state = {} if state is None else state
    mids = group_tensors(groups)
    owned = state.get('owned')
    if owned is None:
        first = row_grads(ys, mids, rows, state.setdefault('outputs', {}))
    index = {id(t): j for j, t in enumerate(mids)}
    out: List[Optional[object]] = [None] * len(leaves)
    for gi, group in enumerate(groups):
        js = [index[id(t)] for t in group if id(t) in index]
        second = state.get('local', {}).get(gi)
        parts = None
        if second is not None and owned is not None:
            parts = second.owned_vjp(owned, rows, js, mids, leaves)
        if parts is None:
            sel, used = _owned_rows(owned, rows, js) if owned is not None \
                else _nonzero_rows({j: first[j] for j in js})
            if not used:
                continue
            if second is not None:
                parts = second.dense_vjp(
                    sel, {id(mids[j]): g for j, g in used.items()}, leaves)
        if parts is None:
            gs = batched_vjp([mids[j] for j in used], leaves,
                             [used[j] for j in used],
                             state.setdefault(('group', gi), {}))
            parts = [(k, (sel, g)) for k, g in enumerate(gs)
                     if g is not None]
        for k, part in parts:
            _accumulate(out, k, part, leaves, len(rows))
    return out


def _accumulate(out: list, k: int, part, leaves, n: int):
    """Add ``part`` (``(sel, (m, *leaf.shape))`` or :class:`Windows` with
    its rows) to ``out[k]``: windows alone stay a list of windows, else
    the sum is dense."""
    if isinstance(part, Windows):
        if out[k] is None or isinstance(out[k], list):
            out[k] = (out[k] or []) + [part]
        else:
            part.add_to(out[k])
        return
    if isinstance(out[k], list):
        dense = leaves[k].new_zeros(n, *leaves[k].shape)
        for w in out[k]:
            w.add_to(dense)
        out[k] = dense
    if out[k] is None:
        out[k] = leaves[k].new_zeros(n, *leaves[k].shape)
    sel, g = part
    out[k].index_add_(0, sel, g.to(out[k].dtype))
