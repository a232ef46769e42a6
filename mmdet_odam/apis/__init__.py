"""Python API: ``init_explainer``, ``explain_image``, ``explain_support``,
``build_explainer``."""
from ..explainers.builder import build_explainer
from .inference import (explain_image, init_explainer, prepare_inputs,
                        read_image)
from .support import explain_support

__all__ = ['init_explainer', 'explain_image', 'explain_support',
           'build_explainer', 'prepare_inputs', 'read_image']
