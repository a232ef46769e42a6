from . import dense_heads, roi_heads  # noqa: F401
