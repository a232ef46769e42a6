"""Per-row gradients by batched autograd (pure torch)."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def as_leaves(out) -> Tuple[object, List[Tensor]]:
    """Replace a module output (tensor or tuple / list of tensors) by leaf
    tensors that require grad. Returns ``(new_output, leaves)``."""
    if isinstance(out, Tensor):
        leaf = out.detach().requires_grad_(True)
        return leaf, [leaf]
    if isinstance(out, (tuple, list)) and out and all(
            isinstance(o, Tensor) for o in out):
        leaves = [o.detach().requires_grad_(True) for o in out]
        return type(out)(leaves), leaves
    raise ValueError(f'layer output of type {type(out).__name__} cannot be '
                     'explained; choose a layer that outputs feature maps')


def row_grads(ys: Tensor, leaves: Sequence[Tensor], rows: Tensor,
              state: Optional[dict] = None) -> List[Optional[Tensor]]:
    """Gradients of ``ys[rows]`` (``ys``: (N,)) w.r.t. each leaf, one per
    row: list of (n, *leaf.shape), or None for a leaf ``ys`` does not use.

    One batched backward (``is_grads_batched``, the graph is retained); if
    vmap fails for some op, one backward per row, and ``state['loop']`` is
    set so later calls sharing ``state`` skip the batched attempt.
    """
    n = len(rows)
    state = {} if state is None else state
    if not state.get('loop', False):
        eye = ys.new_zeros(n, ys.shape[0])
        eye[torch.arange(n, device=ys.device), rows] = 1
        try:
            gs = torch.autograd.grad(ys, leaves, grad_outputs=eye,
                                     is_grads_batched=True,
                                     retain_graph=True, allow_unused=True)
            return list(gs)
        except (RuntimeError, NotImplementedError):
            state['loop'] = True
    per = [
        torch.autograd.grad(ys[int(r)], leaves, retain_graph=True,
                            allow_unused=True) for r in rows
    ]
    return [
        None if per[0][k] is None else torch.stack([p[k] for p in per])
        for k in range(len(leaves))
    ]
