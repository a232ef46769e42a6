"""Per-row gradients by batched autograd (pure torch)."""
import warnings
from contextlib import contextmanager
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


def tokens_as_level_leaves(tokens: Tensor, shapes: Sequence[Tuple[int, int]]
                           ) -> Tuple[Tensor, List[Tensor]]:
    """Replace flattened multi-level tokens by per-level leaf maps.

    Args:
        tokens (Tensor): (B, N, C), levels flattened row-major and
            concatenated (a DETR-family encoder's memory), N = sum h_l w_l.
        shapes (list[tuple]): (h_l, w_l) of each level.

    Returns:
        tuple: ``(new_tokens, leaves)``: ``new_tokens`` (B, N, C) equal to
        ``tokens`` but computed from ``leaves`` [(B, C, h_l, w_l)] that
        require grad.
    """
    b, n, c = tokens.shape
    sizes = [int(h) * int(w) for h, w in shapes]
    if sum(sizes) != n:
        raise ValueError(f'{n} tokens do not tile levels {list(shapes)}')
    leaves = [
        t.detach().transpose(1, 2).reshape(b, c, int(h), int(w))
        .contiguous().requires_grad_(True)
        for t, (h, w) in zip(tokens.split(sizes, 1), shapes)
    ]
    new = torch.cat([lf.flatten(2).transpose(1, 2) for lf in leaves], 1)
    return new, leaves


def _batched_grad(ys: Tensor, leaves: Sequence[Tensor], eye: Tensor):
    """``is_grads_batched`` gradients, and whether vmap had to fall back to
    its slow per-row loop for some op (then a plain loop of backward passes
    is faster: it does not replay the batched graph op by op)."""
    # is_grads_batched runs on the legacy vmap, whose fallback warns only
    # when its debug flag is on
    toggle = getattr(torch._C, '_debug_only_display_vmap_fallback_warnings',
                     None)
    probe = getattr(torch._C,
                    '_debug_only_are_vmap_fallback_warnings_enabled', None)
    was = bool(probe()) if probe is not None else False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        if toggle is not None:
            toggle(True)
        try:
            gs = torch.autograd.grad(ys, leaves, grad_outputs=eye,
                                     is_grads_batched=True,
                                     retain_graph=True, allow_unused=True)
        finally:
            if toggle is not None:
                toggle(was)
    slow = any('batching rule' in str(w.message) for w in caught)
    for w in caught:
        if 'batching rule' not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename,
                                   w.lineno)
    return gs, slow


#: Backward nodes whose local derivative is infinite at 0 (sqrt, x ** p
#: with p < 1): there ``0 * inf`` gives NaN where the limit is 0.
SINGULAR_NODES = ('SqrtBackward0', 'RsqrtBackward0', 'PowBackward0')


def zero_nan_at_singular_nodes(ys: Tensor,
                               handles: Optional[list] = None) -> int:
    """Make ``0 * inf`` terms of the graph of ``ys`` contribute 0.

    A detector may take ``sqrt`` of exact zeros (PAA pads its scores with a
    zero column and takes ``sqrt(score * iou)``); a backward through that
    node multiplies a zero upstream gradient by an infinite derivative and
    the NaN spreads over every position. A hook on each such node of this
    graph sets those NaN entries to 0, the limit of the term. Returns the
    number of nodes hooked; their removable handles go to ``handles``
    (see :func:`singular_nodes_zeroed`).
    """
    seen, stack, count = set(), [ys.grad_fn], 0

    def clean(grad_inputs, grad_outputs):
        return tuple(None if g is None else torch.nan_to_num(
            g, nan=0.0, posinf=float('inf'), neginf=float('-inf'))
            for g in grad_inputs)

    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in SINGULAR_NODES:
            handle = node.register_hook(clean)
            if handles is not None:
                handles.append(handle)
            count += 1
        stack.extend(n for n, _ in node.next_functions)
    return count


@contextmanager
def singular_nodes_zeroed(ys: Tensor):
    """:func:`zero_nan_at_singular_nodes` for the block; the hooks are
    removed after it (a graph shared by several calls, e.g. the images of
    one batch, is left as it was). Yields the number of nodes hooked."""
    handles: list = []
    count = zero_nan_at_singular_nodes(ys, handles)
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


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
    if 'loop' not in state and n > 2:  # try vmap on two rows first
        head = row_grads(ys, leaves, rows[:2], state)
        rest = row_grads(ys, leaves, rows[2:], state)
        return [_cat_rows([a, b], [2, n - 2], lf)
                for a, b, lf in zip(head, rest, leaves)]
    eye = ys.new_zeros(n, ys.shape[0])
    eye[torch.arange(n, device=ys.device), rows] = 1
    return batched_vjp([ys], leaves, [eye], state)


#: Backward nodes for which the legacy vmap of ``is_grads_batched`` has no
#: batching rule (it falls back to a slower loop than plain backwards).
UNBATCHED_NODES = frozenset({
    'ConvolutionBackward0', 'NativeGroupNormBackward0',
    'NativeBatchNormBackward0', 'NativeLayerNormBackward0',
    'SoftmaxBackward0', 'LogSoftmaxBackward0',
    'MaxPool2DWithIndicesBackward0', 'UpsampleNearest2DBackward0',
    'UpsampleBilinear2DBackward0', 'GridSampler2DBackward0',
})


def has_unbatched_ops(outputs: Sequence[Tensor]) -> bool:
    """Whether the graph of ``outputs`` holds a node of
    :data:`UNBATCHED_NODES` (then one backward per row is faster than
    trying the batched one)."""
    seen, stack = set(), [t.grad_fn for t in outputs]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if type(node).__name__ in UNBATCHED_NODES:
            return True
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return False


def batched_vjp(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
                grads: Sequence[Tensor], state: dict
                ) -> List[Optional[Tensor]]:
    """(m, *input.shape) vector-Jacobian products of ``outputs`` for m
    batched ``grads`` (each (m, *output.shape)); None for an input the
    outputs do not use. One ``is_grads_batched`` backward (graph
    retained); where vmap fails or falls back for some op, one backward
    per row, and ``state['loop']`` makes later calls sharing ``state`` skip
    the batched attempt."""
    m = grads[0].shape[0]
    if m == 0:
        return [None] * len(inputs)
    if 'loop' not in state and has_unbatched_ops(outputs):
        state['loop'] = True
    if 'loop' not in state and m > 2:  # try vmap on two rows first
        head = batched_vjp(outputs, inputs, [g[:2] for g in grads], state)
        rest = batched_vjp(outputs, inputs, [g[2:] for g in grads], state)
        return [_cat_rows([a, b], [2, m - 2], lf)
                for a, b, lf in zip(head, rest, inputs)]
    if not state.get('loop', False):
        try:
            gs, slow = _batched_grad(outputs, inputs, grads)
            state['loop'] = slow  # an op without a vmap rule: loop later
            return list(gs)
        except (RuntimeError, NotImplementedError):
            state['loop'] = True
    per = [_row_vjp(outputs, inputs, [g[i] for g in grads])
           for i in range(grads[0].shape[0])]
    return [_stack_rows([p[k] for p in per], inputs[k])
            for k in range(len(inputs))]


def _row_vjp(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
             grads: Sequence[Tensor]) -> Sequence[Optional[Tensor]]:
    """One row's vector-Jacobian product, from the outputs whose gradient
    is non-zero only: autograd would send the zeros of the others through
    their whole graph (e.g. a head's other tower)."""
    used = [k for k, g in enumerate(grads) if bool(g.ne(0).any())]
    if not used:
        return [None] * len(inputs)
    return torch.autograd.grad([outputs[k] for k in used], inputs,
                               [grads[k] for k in used],
                               retain_graph=True, allow_unused=True)


def _stack_rows(per: Sequence[Optional[Tensor]],
                leaf: Tensor) -> Optional[Tensor]:
    """Stack per-row gradients (None: a row that does not use ``leaf``,
    zeros there); None when no row uses it."""
    if all(p is None for p in per):
        return None
    return torch.stack([torch.zeros_like(leaf) if p is None else p
                        for p in per])


def _cat_rows(parts: Sequence[Optional[Tensor]], counts: Sequence[int],
              leaf: Tensor) -> Optional[Tensor]:
    """Concatenate per-row gradient blocks (None: rows that do not use
    ``leaf``, zeros there); None when no row uses it."""
    if all(p is None for p in parts):
        return None
    return torch.cat([
        leaf.new_zeros(c, *leaf.shape) if p is None else p
        for p, c in zip(parts, counts)
    ])
