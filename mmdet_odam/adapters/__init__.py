"""Head adapters: the only code that knows mmdet head internals.

An adapter probes a detector (:class:`Support`: every mmdet method it
mirrors must be the base class's own and the structure it needs must be
there) and, when it accepts, its explainer keeps the candidate index of
every detection and computes each candidate's scalar targets. The exact
generic autograd adapter is the terminal fallback (:func:`resolve`).
"""
from .deform_conv import add_deform_conv_hooks, deform_conv_modules
from .dense import (patch_path_support, probe_dense_detector,
                    supports_patch_path)
from .registry import ADAPTERS, GENERIC, Adapter, Resolution, resolve
from .roi import check_roi_head, probe_two_stage_detector
from .support import Support, equivalent_override, overridden_methods

__all__ = [
    'ADAPTERS', 'GENERIC', 'Adapter', 'Resolution', 'Support',
    'add_deform_conv_hooks', 'check_roi_head', 'deform_conv_modules',
    'equivalent_override', 'overridden_methods', 'patch_path_support',
    'probe_dense_detector', 'probe_two_stage_detector', 'resolve',
    'supports_patch_path'
]
