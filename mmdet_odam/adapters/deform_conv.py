"""Deformable convolutions of a detector back-propagated by torch's kernels.

mmcv's CPU backward of a deformable convolution's input and offsets is
slow: for one output position's cotangent of a 256-channel 3x3 layer on a
32x40 map, about six of the layer's forwards, and 9.5x the same backward
through this module's torch ops (``benchmarks/bench_deform_conv.py``, one
thread). On the heads that use such a layer (VFNet, RepPoints, DDOD,
FoveaBox with ``with_deform``...) every explained detection and target
pays it. :func:`add_deform_conv_hooks` adds forward hooks that keep each
layer's output values (mmcv's, bit for bit) and give them the gradient of
:func:`~mmdet_odam.paths.deform_conv.deform_conv2d_torch`, the same
function in torch ops, on CPU tensors (elsewhere mmcv's own backward
runs). A module whose class overrides mmcv's ``forward``
is left alone, as is an input smaller than the kernel (mmcv pads it
first). Where a sample falls exactly on a pixel, bilinear interpolation
has a kink and the two backwards may take different one-sided derivatives
with respect to the offset there.
"""
import functools
from typing import Callable, Dict, List

import torch
from torch import nn

from ..paths.deform_conv import deform_conv2d_torch, straight_through

__all__ = ['deform_conv_modules', 'add_deform_conv_hooks']


def _pack_operands(module, inputs):
    x = inputs[0]
    return x, module.conv_offset(x), None


def _modulated_pack_operands(module, inputs):
    x = inputs[0]
    o1, o2, mask = torch.chunk(module.conv_offset(x), 3, dim=1)
    return x, torch.cat((o1, o2), dim=1), torch.sigmoid(mask)


@functools.lru_cache(maxsize=1)
def _operand_readers() -> Dict[Callable, Callable]:
    """mmcv's own ``forward`` of each deformable convolution class -> the
    ``(x, offset, mask)`` of one call of it, from the module and its
    inputs (the ``Pack`` variants compute offset and mask from ``x`` as
    mmcv does: their offset convolution runs a second time)."""
    from mmcv.ops import (DeformConv2d, DeformConv2dPack,
                          ModulatedDeformConv2d, ModulatedDeformConv2dPack)
    return {
        DeformConv2d.forward: lambda m, inp: (inp[0], inp[1], None),
        ModulatedDeformConv2d.forward: lambda m, inp: tuple(inp[:3]),
        DeformConv2dPack.forward: _pack_operands,
        ModulatedDeformConv2dPack.forward: _modulated_pack_operands,
    }


def deform_conv_modules(model: nn.Module) -> List[nn.Module]:
    """Modules running mmcv's own ``DeformConv2d`` /
    ``ModulatedDeformConv2d`` forward or that of their ``Pack`` variant
    (not an override of it)."""
    readers = _operand_readers()
    return [m for m in model.modules() if type(m).forward in readers]


def _torch_grad_hook(module, inputs, output):
    """Forward hook: ``output`` with the torch formulation's gradient."""
    if not torch.is_grad_enabled() or not output.requires_grad:
        return None
    x = inputs[0]
    if x.device.type != 'cpu':
        return None
    kh, kw = module.kernel_size
    if x.shape[-2] < kh or x.shape[-1] < kw:
        return None  # mmcv pads such inputs: keep its own backward
    x, offset, mask = _operand_readers()[type(module).forward](module, inputs)
    ref = deform_conv2d_torch(
        x, offset, module.weight, module.stride, module.padding,
        module.dilation, module.groups, module.deform_groups, mask=mask,
        bias=None if mask is None else module.bias)
    if ref.shape != output.shape or ref.dtype != output.dtype:
        return None
    return straight_through(output, ref)


def add_deform_conv_hooks(model: nn.Module, hooks) -> int:
    """Hook every mmcv deformable convolution of ``model`` (see the module
    docstring) into ``hooks`` (a :class:`~mmdet_odam.explainers.base.
    HookList`, removed by its owner). Returns the number hooked."""
    mods = deform_conv_modules(model)
    for m in mods:
        hooks.add(m.register_forward_hook(_torch_grad_hook))
    return len(mods)
