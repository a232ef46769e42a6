"""``explain_support``: which path each target of a model's explanation
takes, and why."""
from typing import Optional, Sequence

from ..adapters.deform_conv import deform_conv_modules
from ..explainers.builder import build_explainer
from ..explainers.support_report import SupportReport
from ..explainers.targets import BASE_TARGETS


def explain_support(model, targets: Optional[Sequence[str]] = None,
                    layer: Optional[str] = None, path: str = 'auto',
                    method: str = 'odam') -> SupportReport:
    """Report the adapter, gradient path and exactness of every target.

    Nothing is run on the model: the explainer is built as
    :func:`explain_image` would build it and asked for its plan.

    Args:
        model: an mmdet detector.
        targets (list[str], optional): default the five scalar targets
            (``cls``, ``left``, ``top``, ``right``, ``bottom``).
        layer (str, optional): explained layer (default of the explainer).
        path (str): ``auto``, ``exact`` or ``fast``.
        method (str): explanation method (default ``odam``).

    Returns:
        SupportReport: ``.rows`` (one dict per target: ``target``,
        ``adapter``, ``explainer``, ``path``, ``exact``, ``layer``,
        ``reasons``), ``.notes``; ``str(report)`` is a table.
    """
    targets = list(targets) if targets is not None else [
        t.value for t in BASE_TARGETS]
    explainer = build_explainer(model, method=method, targets=targets,
                                layer=layer, path=path)
    notes = ()
    n_dcn = len(deform_conv_modules(model))
    if n_dcn and getattr(explainer, 'torch_deform_grads', False):
        notes = (f'{n_dcn} mmcv deformable convolution(s): on the CPU '
                 "back-propagated through torch ops (mmcv's forward values "
                 "kept; same gradient, faster than mmcv's CPU backward)", )
    return SupportReport(type(model).__name__, explainer.path_choices(),
                         notes)
