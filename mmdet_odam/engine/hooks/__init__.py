"""Runner hooks (registered in mmdet's ``HOOKS``)."""
from .odam_hook import OdamHook, odam_maps_to_image, preserved_rng_state

__all__ = ['OdamHook', 'odam_maps_to_image', 'preserved_rng_state']
