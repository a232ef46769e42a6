"""Registry of explainers and :func:`build_explainer`.

Other explanation methods register with ``@EXPLAINERS.register_module()``
(e.g. ``name='gradcam'``) and are built by ``build_explainer(model,
method='gradcam', **kw)``.
"""
import logging

from mmengine.logging import print_log
from mmengine.registry import Registry

from ..adapters import resolve

EXPLAINERS = Registry('explainer')


def odam_explainer_name(model) -> str:
    """Registry name of the ODAM explainer whose adapter accepts ``model``
    (see :func:`mmdet_odam.adapters.resolve`); logs why the specific
    adapters declined when the generic path is chosen."""
    res = resolve(model)
    if res.adapter.name == 'generic' and res.declined:
        print_log(f'{type(model).__name__}: exact generic autograd path '
                  f'({res.summary()})', 'current', logging.INFO)
    return res.adapter.explainer


def _wants_mask(targets) -> bool:
    if targets is None:
        return False
    names = targets.split(',') if isinstance(targets, str) else targets
    return any(str(getattr(t, 'value', t)).strip().lower() == 'mask'
               for t in names)


def build_explainer(model, method: str = 'odam', **kwargs):
    """Build the explainer for ``model``.

    ``method='odam'`` picks the explainer by what the detector is, not by its
    class name: each adapter probes the model (:mod:`mmdet_odam.adapters`)
    and the exact generic autograd explainer takes every detector the
    specific ones decline. Other methods (``gradcam``, ``gradcampp``,
    ``drise``...) and the explicit ODAM explainers (``odam_dense``,
    ``odam_two_stage``, ``odam_generic``) are looked up in
    :data:`EXPLAINERS`.
    """
    method = str(method).lower()
    name = odam_explainer_name(model) if method == 'odam' else method
    if method == 'odam' and _wants_mask(kwargs.get('targets')):
        name = 'odam_generic'  # the mask target: exact generic path
    if name not in EXPLAINERS.module_dict:
        valid = sorted(set(EXPLAINERS.module_dict) | {'odam'})
        raise ValueError(f'Unknown explanation method {method!r}; valid: '
                         f'{", ".join(valid)}')
    cls = EXPLAINERS.get(name)
    return cls(model, **kwargs)
