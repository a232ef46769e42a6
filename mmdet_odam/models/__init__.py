from . import backbones  # noqa: F401
from . import dense_heads, roi_heads  # noqa: F401
