"""Dense (single-stage) head adapter: which mmdet heads the dense ODAM
explainer can mirror, probed by behaviour, not by class.

The dense explainer re-implements three things of mmdet: the per-level head
forward (``forward_single`` of ``FCOSHead`` / ``RetinaHead`` / ``ATSSHead``),
the post-processing that keeps each detection's candidate index (a mirror of
``BaseDenseHead.predict_by_feat`` / ``_predict_by_feat_single`` /
``_bbox_post_process``) and each candidate's scalar targets. A head is
accepted only when every one of those methods resolves to the base class's
own implementation (subclasses that override them, such as TOOD, PAA, VFNet,
RTMDet or FSAF, are declined with the list of overridden methods and go to
the exact generic path). The patch fast path also needs plain stride-1
"same" conv towers (:func:`supports_patch_path`).
"""
import inspect
from typing import List

from torch import nn

from .support import Support, override_reasons

__all__ = [
    'probe_dense_detector', 'patch_path_support', 'supports_patch_path',
    'tower_layers', 'receptive_radius', 'has_group_norm', 'DENSE_MIRRORED'
]

#: Head methods the dense explainer mirrors (must be the base class's own).
DENSE_MIRRORED = ('forward', 'forward_single', 'predict', 'predict_by_feat',
                  '_predict_by_feat_single', '_bbox_post_process')
#: Detector methods the dense explainer mirrors.
DETECTOR_MIRRORED = ('predict', 'extract_feat')


def _dense_bases():
    from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
    return (FCOSHead, RetinaHead, ATSSHead)


def probe_dense_detector(model: nn.Module) -> Support:
    """Whether the dense explainer mirrors ``model`` exactly (see module
    doc); the reasons name what differs."""
    from mmdet.models.detectors import SingleStageDetector
    if not isinstance(model, SingleStageDetector):
        return Support.no(f'{type(model).__name__} is not a single-stage '
                          'detector')
    reasons = override_reasons(model, SingleStageDetector, DETECTOR_MIRRORED)
    head = getattr(model, 'bbox_head', None)
    name = type(head).__name__
    base = next((b for b in _dense_bases() if isinstance(head, b)), None)
    if base is None:
        return Support.no(*reasons, f'{name} derives from none of FCOSHead, '
                          'RetinaHead, ATSSHead')
    reasons += override_reasons(head, base, DENSE_MIRRORED)
    if getattr(getattr(head, 'loss_cls', None), 'custom_cls_channels',
               False):
        reasons.append(f'{name} uses a custom class activation')
    for attr in ('cls_convs', 'reg_convs', 'prior_generator', 'bbox_coder'):
        if not hasattr(head, attr):
            reasons.append(f'{name} has no {attr}')
    try:
        level_call_args(head, 0)
    except (NotImplementedError, AttributeError, IndexError) as e:
        reasons.append(str(e))
    return Support.from_reasons(reasons)


# ----------------------------------------------------------------------
# head structure (what the patch fast path needs)
# ----------------------------------------------------------------------

def tower_layers(head: nn.Module) -> List[nn.Module]:
    """The tower layers (``cls_convs`` + ``reg_convs``) of a dense head."""
    out = []
    for name in ('cls_convs', 'reg_convs'):
        out += list(getattr(head, name, []) or [])
    return out


def layer_radius(layer: nn.Module) -> int:
    convs = [m for m in layer.modules()
             if isinstance(m, nn.modules.conv._ConvNd)]
    others = [
        m for m in layer.modules()
        if not list(m.children()) and not isinstance(
            m, (nn.Conv2d, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
                nn.ReLU, nn.LeakyReLU, nn.Identity, nn.SiLU, nn.GELU))
    ]
    if others or any(type(c) is not nn.Conv2d for c in convs):
        raise NotImplementedError(
            f'patch path supports plain Conv2d/GN/BN/activation towers, got '
            f'{type(layer).__name__}; use path=exact')
    r = 0
    for c in convs:
        k, d, s, p = c.kernel_size, c.dilation, c.stride, c.padding
        if k[0] != k[1] or s != (1, 1) or p[0] != (k[0] - 1) // 2 * d[0]:
            raise NotImplementedError(
                'patch path needs stride-1 "same" square convs; use '
                'exact=True')
        r += (k[0] - 1) // 2 * d[0]
    return r


def receptive_radius(head: nn.Module) -> int:
    """R = max tower radius + max prediction-conv radius (in cells)."""
    towers = [list(getattr(head, n, []) or []) for n in
              ('cls_convs', 'reg_convs')]
    tower_r = max([sum(layer_radius(m) for m in t) for t in towers] + [0])
    preds = [m for m in head.children() if isinstance(m, nn.Conv2d)]
    if not preds:
        raise NotImplementedError(f'{type(head).__name__} has no prediction '
                                  f'convs; use path=exact')
    return tower_r + max(layer_radius(p) for p in preds)


def has_group_norm(head: nn.Module) -> bool:
    """Whether ``head`` normalises with GroupNorm (the patch path then
    freezes the statistics: an approximation, see the module doc)."""
    return any(isinstance(m, nn.GroupNorm) for m in head.modules())


def level_call_args(head: nn.Module, level: int) -> tuple:
    """Extra positional args of ``head.forward_single`` for a level."""
    args = []
    params = list(inspect.signature(head.forward_single).parameters)[1:]
    for name in params:
        if name == 'scale':
            args.append(head.scales[level])
        elif name == 'stride':
            args.append(head.strides[level])
        else:
            raise NotImplementedError(
                f'{type(head).__name__}.forward_single({name}=...) is not '
                f'supported by the patch path; use path=exact')
    return tuple(args)


def patch_path_support(head: nn.Module) -> Support:
    """Whether the patch path applies to ``head`` (see
    :func:`supports_patch_path`), with the reason when not."""
    try:
        receptive_radius(head)
        level_call_args(head, 0)
    except (NotImplementedError, AttributeError, IndexError) as e:
        return Support.no(str(e))
    missing = [a for a in ('prior_generator', 'bbox_coder')
               if not hasattr(head, a)]
    return Support.from_reasons(f'{type(head).__name__} has no {a}'
                                for a in missing)


def supports_patch_path(head: nn.Module) -> bool:
    """Whether the patch path (a re-run of the head on each candidate's
    window) applies to ``head``."""
    return patch_path_support(head).ok


def gn_layers(head: nn.Module) -> List[nn.Module]:
    """GroupNorm modules of the head's towers."""
    return [m for layer in tower_layers(head) for m in layer.modules()
            if isinstance(m, nn.GroupNorm)]
