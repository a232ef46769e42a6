"""Exact per-candidate gradients on one FPN level's own forward.

A dense-head candidate's scalars (score, box extents) depend on the FPN
features only through the head's forward of ONE level of ONE image: the
head runs level by level, GroupNorm statistics are per image and per level,
and images do not mix. So the exact gradient of a candidate w.r.t. its level
map, GroupNorm's mean / variance terms included, is the backward of that
level's head forward alone: not of the backbone, the neck, the other levels
or the other images of the batch.

:func:`~mmdet_odam.core.level_groups` splits the candidates by (image,
level);
:func:`scalar_grads` back-propagates each scalar of a level forward to its
level map, one backward per scalar on the retained graph. (A batched
backward, ``is_grads_batched``, is slower on CPU: vmap has no batching rule
for GroupNorm's backward and falls back to a loop with extra copies.)
"""
from typing import Iterator, Tuple

import torch
from torch import Tensor


def scalar_grads(ys: Tensor, leaf: Tensor,
                 chunk: int) -> Iterator[Tuple[Tensor, Tensor]]:
    """Exact gradient of every entry of ``ys`` w.r.t. ``leaf``.

    Args:
        ys (Tensor): (n,) scalars computed from ``leaf`` (graph attached).
        leaf (Tensor): (1, C, h, w) level map of one image,
            ``requires_grad``.
        chunk (int): scalars per yielded block (bounds memory).

    Yields:
        tuple: ``idx`` (m,) positions in ``ys`` and their gradients
        (m, C, h, w). An entry that does not depend on ``leaf`` gets zeros.
    """
    if ys.dim() != 1:
        raise ValueError(f'ys must be (n,), got {tuple(ys.shape)}')
    if leaf.dim() != 4 or leaf.shape[0] != 1 or not leaf.requires_grad:
        raise ValueError('leaf must be a (1, C, h, w) tensor that requires '
                         f'grad, got {tuple(leaf.shape)}')
    chunk = max(int(chunk), 1)
    n = ys.shape[0]
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=ys.device)
        gs = []
        for i in idx.tolist():
            g, = torch.autograd.grad(ys[i], leaf, retain_graph=True,
                                     allow_unused=True)
            gs.append(torch.zeros_like(leaf) if g is None else g)
        yield idx, torch.cat(gs)
