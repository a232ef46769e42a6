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
    :data:`EXPLAINERS` (every module of :mod:`mmdet_odam.explainers`
    registers on import of the package).
    """
    method = str(method).lower()
    if method == 'odam':
        if _is_dense(model):
            name = 'odam_dense'
        elif _is_two_stage(model):
            name = 'odam_two_stage'
        else:
            name = 'odam_generic'
    else:
        name = method
    if name not in EXPLAINERS.module_dict:
        valid = sorted(set(EXPLAINERS.module_dict) | {'odam'})
        raise ValueError(f'Unknown explanation method {method!r}; valid: '
                         f'{", ".join(valid)}')
    cls = EXPLAINERS.get(name)
    return cls(model, **kwargs)
