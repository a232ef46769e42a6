
from .crowd_recall_metric import CrowdRecallMetric  # noqa: F401
from .explanation_metric import ExplanationMetric  # noqa: F401
