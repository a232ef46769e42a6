"""Runner hooks (registered in mmdet's ``HOOKS``)."""
from .odam_hook import OdamHook, odam_maps_to_image, preserved_rng_state
from .rank_zero_logger_hook import RankZeroLoggerHook

__all__ = [
    'OdamHook', 'RankZeroLoggerHook', 'odam_maps_to_image',
    'preserved_rng_state'
]
