"""Registry of explainers and :func:`build_explainer`.

Other explanation methods register with ``@EXPLAINERS.register_module()``
(e.g. ``name='gradcam'``) and are built by ``build_explainer(model,
method='gradcam', **kw)``.
"""
from mmengine.registry import Registry

EXPLAINERS = Registry('explainer')

ODAM_METHODS = ('odam', )


def _is_two_stage(model) -> bool:
    from mmdet.models.detectors import TwoStageDetector
    return isinstance(model, TwoStageDetector)


def _is_dense(model) -> bool:
    from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
    from mmdet.models.detectors import SingleStageDetector
    head = getattr(model, 'bbox_head', None)
    return isinstance(model, SingleStageDetector) and isinstance(
        head, (FCOSHead, RetinaHead, ATSSHead))


def build_explainer(model, method: str = 'odam', **kwargs):
    """Build the explainer for ``model``.

    ``method='odam'`` dispatches on the detector: FCOS / RetinaNet / ATSS
    single-stage detectors -> ``DenseHeadExplainer``; two-stage detectors ->
    ``TwoStageExplainer``; anything else -> ``GenericExplainer``. Other
    methods (``gradcam``, ``gradcampp``, ``drise``...) are looked up in
    :data:`EXPLAINERS`.
    """
    from . import dense  # noqa: F401  (registers odam_dense)
    method = str(method).lower()
    if method == 'odam':
        if _is_dense(model):
            name = 'odam_dense'
        elif _is_two_stage(model):
            from . import two_stage  # noqa: F401
            name = 'odam_two_stage'
        else:
            from . import generic  # noqa: F401
            name = 'odam_generic'
    else:
        _import_optional()
        name = method
    if name not in EXPLAINERS.module_dict:
        valid = sorted(set(EXPLAINERS.module_dict) | {'odam'})
        raise ValueError(f'Unknown explanation method {method!r}; valid: '
                         f'{", ".join(valid)}')
    cls = EXPLAINERS.get(name)
    return cls(model, **kwargs)


def _import_optional():
    """Import modules that register other methods, if they exist."""
    import importlib
    for mod in ('gradcam', 'drise', 'two_stage', 'generic'):
        try:
            importlib.import_module(f'{__package__}.{mod}')
        except ImportError:
            pass
