"""mmdet-odam: ODAM instance-specific explanations, Odam-Train and Odam-NMS
for MMDetection 3.x.

Importing this package registers every component into MMDetection's
registries (``custom_imports=dict(imports=['mmdet_odam'])``).
"""
from .version import __version__
from . import utils  # noqa: F401  (checkpoint safe-globals first)
from . import core, explainers, nms, losses, models  # noqa: F401
from . import datasets, evaluation, engine, visualization, apis  # noqa: F401

__all__ = ['__version__']
