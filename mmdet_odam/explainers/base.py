"""Base class of explainers and the context manager that protects the model.

Everything an explainer changes on the user's model (training flags,
``requires_grad`` of parameters, torch hooks) lives for one call inside
:func:`model_guard` and is restored on exit, also when an exception is
raised mid-way.
"""
import logging
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..adapters.deform_conv import add_deform_conv_hooks
from ..core import minmax_normalize
from .builder import EXPLAINERS
from .results import Explanation
from .support_report import PathChoice
from .targets import (BASE_TARGETS, BOX_COORDS, ExplainPath, Target, expand_targets,
                      parse_grad_mode, parse_path, parse_smoothing,
                      parse_targets)
from .verify import Verify, mark_verified, needs_check, parse_verify, \
    predict_mismatch


class HookList:
    """Torch hook handles registered during one call; all removed by
    :meth:`remove` (called by :func:`model_guard`)."""

    def __init__(self):
        self.handles = []

    def add(self, handle):
        self.handles.append(handle)
        return handle

    def forward(self, module: nn.Module, fn):
        return self.add(module.register_forward_hook(fn))

    def forward_pre(self, module: nn.Module, fn):
        return self.add(module.register_forward_pre_hook(fn))

    def remove(self):
        while self.handles:
            self.handles.pop().remove()


@contextmanager
def model_guard(model: nn.Module, eval_mode: bool = True,
                freeze: bool = True):
    """Run a block with the model in eval mode and parameters frozen.

    Yields a :class:`HookList`; every hook added to it is removed on exit.
    Training flags of all modules and ``requires_grad`` of all parameters are
    restored on exit, also on exceptions.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    hooks = HookList()
    try:
        if eval_mode:
            model.eval()
        if freeze:
            for p, _ in grads:
                p.requires_grad_(False)
        yield hooks
    finally:
        hooks.remove()
        for m, t in modes:
            m.training = t
        for p, g in grads:
            p.requires_grad_(g)


def top_level_names(model: nn.Module) -> List[str]:
    """Names a user can give as ``layer`` (top-level children), sorted."""
    return sorted(n for n, _ in model.named_children())


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """Module named ``name`` (dotted path); ``ValueError`` listing valid
    top-level names if it does not exist."""
    mods = dict(model.named_modules())
    if name in mods and name != '':
        return mods[name]
    raise ValueError(
        f'Unknown layer {name!r}; valid names: top-level modules '
        f'{", ".join(top_level_names(model))} or any dotted submodule name '
        f'(e.g. backbone.layer3), or None for the default layer')


class BaseExplainer:
    """Common options and result assembly of all explainers.

    Args:
        model (nn.Module): an mmdet detector (not modified beyond a call).
        targets (str | Sequence): targets to explain (see :class:`Target`).
        layer (str, optional): explained layer; ``None`` = the default of the
            explainer (FPN level of the detection / RoI features).
        smoothing (str): ``gaussian`` (default) or ``none``.
        grad_mode (str): ``pos_relu`` (default), ``neg_relu``, ``pos_norelu``,
            ``abs``.
        chunk_size (int): candidates per batched backward in autograd paths.
        path (str): ``'auto'`` (default), ``'exact'`` or ``'fast'``, see
            :class:`~mmdet_odam.explainers.targets.ExplainPath`.
        exact (bool | str, optional): older spelling of ``path``
            (``True`` = ``'exact'``, ``False`` = ``'fast'``).
        verify (str): compare the explained detections with
            ``model.predict`` on the first call (``'once'``, default), on
            every call (``'always'``) or never (``'never'``); see
            :mod:`mmdet_odam.explainers.verify`.
    """
    method = 'odam'

    def __init__(self, model: nn.Module, targets=('cls', ), layer=None,
                 smoothing='gaussian', grad_mode='pos_relu',
                 chunk_size: int = 16, path=None, exact=None,
                 verify='once', **kwargs):
        if kwargs:
            raise TypeError(f'Unknown explainer options: {sorted(kwargs)}')
        self.model = model
        self.targets: List[Target] = parse_targets(targets)
        self.scalar_targets: List[Target] = expand_targets(self.targets)
        self.smoothing = parse_smoothing(smoothing)
        self.grad_mode = parse_grad_mode(grad_mode)
        if int(chunk_size) < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        self.chunk_size = int(chunk_size)
        self.path: ExplainPath = parse_path(path, exact)
        self.verify: Verify = parse_verify(verify)
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f'layer must be a module name or None, got '
                            f'{type(layer).__name__}')
        self.layer = self.check_layer(layer)
        if Target.MASK in self.targets and not self.supports_mask_target:
            raise ValueError(
                f"target 'mask' is not available with {type(self).__name__}"
                "; method='odam' explains it through the exact generic path "
                'of detectors with a RoI mask head (Mask R-CNN...)')

    #: Whether the ``mask`` target is implemented.
    supports_mask_target = False

    @property
    def exact(self):
        """Older spelling of :attr:`path`: ``True`` / ``False`` /
        ``'auto'``."""
        return {ExplainPath.EXACT: True, ExplainPath.FAST: False,
                ExplainPath.AUTO: 'auto'}[self.path]

    # -- options -------------------------------------------------------
    def check_layer(self, layer: Optional[str]) -> Optional[str]:
        """Validate ``layer`` against the model; override to accept
        explainer-specific names."""
        if layer is None:
            return None
        resolve_module(self.model, layer)
        return layer

    @staticmethod
    def check_thresholds(score_thr: float, topk: int):
        if not 0.0 <= float(score_thr) <= 1.0:
            raise ValueError(f'score_thr must be in [0, 1], got {score_thr}')
        if topk is not None and int(topk) < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')

    # -- API -----------------------------------------------------------
    def explain(self, inputs: Tensor, data_samples: Sequence,
                score_thr: float = 0.3, topk: int = 100, boxes=None,
                labels=None) -> List[Explanation]:
        """Explain a preprocessed batch.

        Args:
            inputs (Tensor): (B, 3, H, W) output of the data preprocessor.
            data_samples (list[DetDataSample]): with metainfo (``img_shape``,
                ``ori_shape``, ``scale_factor``, ``batch_input_shape``...).
            score_thr (float): keep detections with score >= this.
            topk (int): keep at most this many detections per image.
            boxes (list[Tensor], optional): per image (K, 4) xyxy boxes in
                original pixels to explain instead of the detections.
            labels (list[Tensor], optional): per image (K,) class of each
                given box (default: best matching candidate's class).

        Returns:
            list[Explanation]: one per image.
        """
        self.check_thresholds(score_thr, topk)
        if boxes is not None and len(boxes) != len(data_samples):
            raise ValueError(f'boxes must hold one entry per image '
                             f'({len(data_samples)}), got {len(boxes)}')
        with model_guard(self.model) as hooks:
            if self.torch_deform_grads:
                add_deform_conv_hooks(self.model, hooks)
            out = self._explain(inputs, data_samples, hooks, score_thr,
                                topk, boxes, labels)
        if boxes is not None or not self.mirrors_predict or \
                not needs_check(self.model, type(self), self.verify):
            return out
        with model_guard(self.model, freeze=False):
            why = predict_mismatch(self.model, inputs, data_samples, out,
                                   score_thr, topk)
        if why is None:
            mark_verified(self.model, type(self))
            return out
        return self._on_mismatch(why, inputs, data_samples, score_thr, topk)

    #: Back-propagate mmcv's deformable convolutions through the same
    #: function in torch ops (:mod:`mmdet_odam.adapters.deform_conv`; the
    #: forward values stay mmcv's). False: mmcv's own backward.
    torch_deform_grads = True

    #: Whether this explainer re-implements mmdet's post-processing (its
    #: detections are then checked against ``model.predict``).
    mirrors_predict = True

    def _on_mismatch(self, why: str, inputs, data_samples, score_thr,
                     topk) -> List[Explanation]:
        """Explained detections differ from ``predict``: ODAM falls back to
        the exact generic path (logged); other methods raise."""
        msg = (f'{type(self).__name__}: the detections it explains are not '
               f'those of {type(self.model).__name__}.predict ({why})')
        if self.method != 'odam':
            raise RuntimeError(msg)
        print_log(f'{msg}; explaining with the exact generic path instead',
                  'current', logging.WARNING)
        generic = EXPLAINERS.get('odam_generic')(
            self.model, targets=self.targets, layer=None,
            smoothing=self.smoothing, grad_mode=self.grad_mode,
            chunk_size=self.chunk_size, path=ExplainPath.EXACT,
            verify='never')
        return generic.explain(inputs, data_samples, score_thr, topk)

    def _explain(self, inputs, data_samples, hooks, score_thr, topk, boxes,
                 labels) -> List[Explanation]:
        raise NotImplementedError

    # -- path report ---------------------------------------------------
    #: Name of the adapter this explainer implements (see
    #: :mod:`mmdet_odam.adapters`).
    adapter = 'generic'

    def path_choices(self) -> List[PathChoice]:
        """The gradient path of each requested target (and why), as
        :func:`mmdet_odam.apis.explain_support` reports it."""
        path, exact, layer, reasons = self.plan()
        name = next((k for k, v in EXPLAINERS.module_dict.items()
                     if v is type(self)), type(self).__name__)
        return [PathChoice(t.value, self.adapter, name, path, exact, layer,
                           tuple(reasons)) for t in self.targets]

    def plan(self):
        """``(path, exact, layer, reasons)`` of this explainer's maps;
        override in explainers whose path depends on the model."""
        return self.method, False, str(self.layer), ()

    # -- helpers for subclasses ----------------------------------------
    @staticmethod
    def zero_clipped(raw: Dict[Target, Tensor], bboxes: Tensor,
                     meta: dict) -> Dict[Target, Tensor]:
        """Empty the box-target maps of coordinates the detector clipped to
        the image border (a clipped coordinate does not depend on the
        features: its gradient is zero, as the generic path finds through
        ``predict``).

        Args:
            raw (dict): target -> (K, H, W) maps, the caller's own: rows
                are zeroed in place (no copy of the maps).
            bboxes (Tensor): (K, 4) reported boxes, original pixels.
            meta (dict): image metainfo (``img_shape``, ``scale_factor``).
        """
        h_in, w_in = (float(v) for v in meta['img_shape'][:2])
        sf = meta.get('scale_factor') or (1.0, 1.0)
        b = bboxes.detach().float() * bboxes.new_tensor(
            [sf[0], sf[1], sf[0], sf[1]]).float()
        edge = b.new_tensor([0.0, 0.0, w_in, h_in])
        on_edge = (b - edge).abs() <= 1e-3 * edge.clamp(min=1.0)
        for t, m in raw.items():
            if t in BOX_COORDS:
                rows = on_edge[:, BOX_COORDS[t][0]].nonzero().squeeze(1)
                if len(rows):
                    m.index_fill_(0, rows.to(m.device), 0)
        return dict(raw)

    def finalize_maps(self, raw: Dict[Target, Tensor],
                      normalized: bool = False) -> Dict[str, Tensor]:
        """Normalise raw (K, H, W) maps per target and add ``combined``.

        ``normalized=True``: the maps are already min-max normalised (saves
        a copy of every map).
        """
        out = {
            t: m.detach().float()
            if normalized else minmax_normalize(m.detach().float())
            for t, m in raw.items()
        }
        if Target.COMBINED in self.targets:
            out[Target.COMBINED] = torch.stack(
                [out[t] for t in BASE_TARGETS]).max(0).values
        return {t.value: out[t] for t in self.targets}
