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
        state (dict, optional): shared between calls (vmap fallbacks).

    Returns:
        list: (n, *leaf.shape) per leaf, or None for a leaf no row uses
        (same as :func:`~mmdet_odam.core.row_grads`).
    """
    state = {} if state is None else state
    mids = [t for g in groups for t in g if t.requires_grad]
    first = row_grads(ys, mids, rows, state.setdefault('outputs', {}))
    by_id = {id(t): g for t, g in zip(mids, first)}
    n = len(rows)
    out: List[Optional[Tensor]] = [None] * len(leaves)
    for gi, group in enumerate(groups):
        used = [(t, by_id[id(t)]) for t in group
                if id(t) in by_id and by_id[id(t)] is not None]
        if not used:
            continue
        hit = torch.stack([g.flatten(1).ne(0).any(1) for _, g in used]
                          ).any(0)
        sel = hit.nonzero().squeeze(1)
        if len(sel) == 0:
            continue
        gs = batched_vjp([t for t, _ in used], leaves,
                         [g[sel] for _, g in used],
                         state.setdefault(('group', gi), {}))
        for k, g in enumerate(gs):
            if g is None:
                continue
            if out[k] is None:
                out[k] = leaves[k].new_zeros(n, *leaves[k].shape)
            out[k].index_add_(0, sel, g.to(out[k].dtype))
    return out
