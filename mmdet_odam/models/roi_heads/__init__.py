
from .odam_standard_roi_head import OdamStandardRoIHead  # noqa: F401
