"""Explainers: targets, results and the ODAM explainers."""
from .base import BaseExplainer, HookList, model_guard
from .builder import EXPLAINERS, build_explainer
from .dense import (DenseHeadExplainer, dense_candidate_maps,
                    tracked_predict_by_feat)
from .results import Explanation
from .gradcam import GradCAMExplainer, GradCAMPPExplainer  # noqa: F401
from .drise import DRISEExplainer  # noqa: F401
from .generic import GenericExplainer, autograd_maps  # noqa: F401
from .two_stage import TwoStageExplainer, roi_candidate_maps  # noqa: F401
from .targets import (BASE_TARGETS, ExplainPath, GradMode, MapOptions,
                      Smoothing, Target, parse_grad_mode, parse_path, parse_smoothing,
                      parse_target, parse_targets)

__all__ = [
    'BaseExplainer', 'HookList', 'model_guard', 'EXPLAINERS',
    'build_explainer', 'DenseHeadExplainer', 'dense_candidate_maps',
    'tracked_predict_by_feat', 'Explanation', 'BASE_TARGETS', 'ExplainPath',
    'GradMode', 'MapOptions', 'Smoothing', 'Target', 'parse_grad_mode', 'parse_path',
    'parse_smoothing', 'parse_target', 'parse_targets'
]
