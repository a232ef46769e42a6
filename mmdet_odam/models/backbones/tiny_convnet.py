"""A few-layer convolutional backbone for tests and CPU demos."""
from typing import Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS


@MODELS.register_module()
class TinyConvNet(BaseModule):
    """Stack of stride-2 stages, each ``Conv3x3(s=2) + Conv3x3``.

    Stage ``i`` (0-based) has stride ``2 ** (i + 1)`` and
    ``channels[i]`` output channels. Meant for tests: it trains on a CPU in
    seconds, and it is not a substitute for a real backbone.

    Args:
        in_channels (int): Input image channels. Defaults to 3.
        channels (Sequence[int]): Output channels of each stage.
        out_indices (Sequence[int]): Stages whose outputs are returned.
        norm_cfg (dict): Normalisation layer config.
        init_cfg (dict | list[dict], optional): Initialisation config.

    Shapes:
        input ``(B, in_channels, H, W)`` -> tuple of
        ``(B, channels[i], H / 2**(i+1), W / 2**(i+1))`` for i in out_indices.
    """

    def __init__(self,
                 in_channels: int = 3,
                 channels: Sequence[int] = (8, 16, 32, 64, 128),
                 out_indices: Sequence[int] = (2, 3, 4),
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 init_cfg=dict(type='Kaiming', layer='Conv2d')) -> None:
        super().__init__(init_cfg=init_cfg)
        channels = tuple(channels)
        out_indices = tuple(out_indices)
        if not channels:
            raise ValueError('TinyConvNet needs at least one stage, '
                             'got channels=()')
        bad = [i for i in out_indices if not 0 <= i < len(channels)]
        if bad or not out_indices:
            raise ValueError(
                f'TinyConvNet out_indices must be non-empty indices into '
                f'channels (0..{len(channels) - 1}), got {out_indices}')
        self.out_indices = out_indices
        self.stages = nn.ModuleList()
        prev = in_channels
        for ch in channels:
            self.stages.append(
                nn.Sequential(
                    ConvModule(prev, ch, 3, stride=2, padding=1,
                               norm_cfg=norm_cfg),
                    ConvModule(ch, ch, 3, padding=1, norm_cfg=norm_cfg)))
            prev = ch

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
