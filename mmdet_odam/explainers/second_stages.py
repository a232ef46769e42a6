"""Which second stage the generic path takes, and what it says about it.

The generic path takes a detection's gradient in two stages through a
head's outputs (:func:`~mmdet_odam.core.staged_row_grads`). The second
stage, from those outputs to the explained layer, runs without autograd
over whole levels where the model allows it: a dense head's levels proved
local run on crops (:mod:`~mmdet_odam.explainers.head_levels`), and a
two-stage detector's box RoI extractors by RoIAlign's adjoint
(:mod:`~mmdet_odam.explainers.roi_stages`). This module records what they
need during ``predict``, builds them, and reports them.
"""
import logging
from typing import List, Optional

import torch
from torch import Tensor

from .head_levels import cropped_levels, level_groups_of
from .roi_stages import roi_extractor_fits, roi_stages

ONE_BACKWARD = 'generic path: one backward per detection and target'


def roi_extractors(model) -> List[torch.nn.Module]:
    """The RoI head's box RoI extractors (one per cascade stage)."""
    ext = getattr(getattr(model, 'roi_head', None), 'bbox_roi_extractor',
                  None)
    if isinstance(ext, torch.nn.ModuleList):
        return list(ext)
    return [ext] if isinstance(ext, torch.nn.Module) else []


def boxes_without_grad(layer, args):
    """Forward pre-hook of an mmcv RoIAlign layer: its boxes detached.
    RoIAlign has no gradient w.r.t. its boxes (mmcv's backward returns
    None there), so no gradient changes; the graph loses the paths from a
    cascade stage's pooled features back through the refined boxes, which
    made every backward to earlier stages run RoIAlign's backward onto
    whole levels for nothing."""
    from mmcv.ops import RoIAlign
    if isinstance(layer, RoIAlign) and not layer.use_torchvision and \
            len(args) == 2 and isinstance(args[1], Tensor):
        return args[0], args[1].detach()
    return None


def record_inputs(model, hooks) -> dict:
    """Hooks (removed with ``hooks``) that record, during ``predict``, a
    dense head's input and output (``'head'``) or every call of the box
    RoI extractors (``'roi'``: (extractor, args, kwargs, output)); the
    boxes going into their RoIAlign layers are detached
    (:func:`boxes_without_grad`)."""
    rec: dict = {'head': [], 'roi': []}
    head = getattr(model, 'bbox_head', None)
    if getattr(model, 'rpn_head', None) is None:
        if isinstance(head, torch.nn.Module):
            hooks.forward(head, lambda mod, inp, out: rec['head'].append(
                (inp, out)))
        return rec
    for ext in roi_extractors(model):
        hooks.add(ext.register_forward_hook(
            lambda mod, args, kwargs, out: rec['roi'].append(
                (mod, args, kwargs, out)), with_kwargs=True))
        for layer in getattr(ext, 'roi_layers', []):
            hooks.forward_pre(layer, boxes_without_grad)
    return rec


def second_stages(model, rec: dict, leaves, cropped: bool = True):
    """``(groups, {group index: second stage})`` for
    :func:`~mmdet_odam.explainers.generic.autograd_maps` from what
    :func:`record_inputs` recorded: a dense head's outputs by level (the
    levels proved local on crops), or a two-stage detector's pooled RoI
    features, one group per extractor call (RoIAlign's adjoint); ``(None,
    None)`` where neither applies. ``cropped=False``: the groups only."""
    if len(rec['head']) == 1:
        (inp, outs), = rec['head']
        groups = level_groups_of(outs)
        local = cropped_levels(model.bbox_head, inp[0], outs, leaves) \
            if groups and cropped and inp else None
        return groups, local
    calls = [c for c in rec['roi'] if isinstance(c[3], Tensor) and
             c[3].requires_grad]
    if not calls or not cropped:
        return None, None
    return [[c[3]] for c in calls], roi_stages(calls, leaves)


def plan_note(model, default_layer: bool, token_encoder: bool) -> str:
    """What the second stage will be, judged from the model's modules (the
    call proves or declines it), for ``explain_support``."""
    if not default_layer:
        return ONE_BACKWARD
    rpn = getattr(model, 'rpn_head', None)
    if type(rpn).__name__ == 'EmbeddingRPNHead':  # Sparse R-CNN...
        return (f'{ONE_BACKWARD} (the queries attend to each other between '
                'stages)')
    if rpn is not None:
        exts = roi_extractors(model)
        why = [w for ext in exts for w in roi_extractor_fits(ext)]
        if why or not exts:
            return f'{ONE_BACKWARD} ({"; ".join(why) or "no box RoI extractor"})'
        return ("generic path: second stage by RoIAlign's adjoint where "
                'each detection owns its RoIs (checked at each call)')
    head = getattr(model, 'bbox_head', None)
    if token_encoder or not isinstance(head, torch.nn.Module):
        return ONE_BACKWARD
    dense = sorted({type(m).__name__ for m in head.modules()
                    if isinstance(m, torch.nn.GroupNorm) or
                    'Deform' in type(m).__name__})
    if dense:
        return ('generic path: one backward of the level per detection and '
                f'target ({dense[0]} in the head: its gradient is not '
                'local)')
    return ("generic path: second stage on crops where the head's levels "
            'are proved local (checked at each call)')


def stage_taken(stages) -> Optional[str]:
    """``'crops'`` / ``'roi_adjoint'`` where a second stage of that kind
    was taken in the call, else None."""
    kinds = sorted({s.kind for s in (stages or {}).values()
                    if getattr(s, 'taken', 0)})
    return '+'.join(kinds) or None


def log_declined(stages):
    """Debug-log why second stages declined during the call."""
    from mmengine.logging import print_log
    for gi, stage in (stages or {}).items():
        if getattr(stage, 'declined', None):
            print_log(f'group {gi}: {stage.kind} declined, full backward: '
                      f'{stage.declined}', 'current', logging.DEBUG)
