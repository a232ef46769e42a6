"""Config checks shared by ``tools/train.py`` and ``tools/test.py``."""
import os.path as osp
from typing import Any, Dict, Iterator, Tuple

from mmengine.config import Config

#: Prefix of a ``--cfg-options`` key that may add a key the config lacks.
NEW_KEY_PREFIX = '+'


def _has_key(node: Any, part: str) -> Tuple[bool, Any]:
    if isinstance(node, dict):
        return (part in node), node.get(part)
    if isinstance(node, (list, tuple)) and part.isdigit():
        idx = int(part)
        return (idx < len(node)), (node[idx] if idx < len(node) else None)
    return False, None


def merge_cfg_options(cfg: Config, options: Dict[str, Any]) -> None:
    """Merge ``--cfg-options`` into ``cfg``; every key must already exist.

    A key such as ``model.backbone.depht`` that is not in the config raises
    instead of silently adding an unused value. Prefix a key with ``+``
    (``+model.test_cfg.nms.corr_low=0.3``) to add a new key on purpose.
    Numeric parts index lists, as in mmengine
    (``train_dataloader.dataset.pipeline.2.scale``).

    Raises:
        KeyError: naming the full key and the first missing part.
    """
    merged = {}
    for key, value in options.items():
        if key.startswith(NEW_KEY_PREFIX):
            merged[key[len(NEW_KEY_PREFIX):]] = value
            continue
        node = cfg._cfg_dict
        parts = key.split('.')
        for depth, part in enumerate(parts):
            found, child = _has_key(node, part)
            if not found:
                parent = '.'.join(parts[:depth]) or '<top level>'
                avail = (sorted(map(str, node.keys()))
                         if isinstance(node, dict) else None)
                hint = f' (keys there: {avail})' if avail else ''
                raise KeyError(
                    f'--cfg-options key {key!r} does not exist in the config '
                    f'{cfg.filename}: no {part!r} under {parent}{hint}. '
                    f'Prefix the key with {NEW_KEY_PREFIX!r} to add a new '
                    'key on purpose.')
            node = child
        merged[key] = value
    cfg.merge_from_dict(merged)


def _dataset_cfgs(cfg: Config) -> Iterator[Tuple[str, dict]]:
    """``(where, dataset cfg)`` of the train/val/test loaders, recursing
    into wrappers (``dataset=``/``datasets=``)."""

    def walk(where, ds):
        if not isinstance(ds, dict):
            return
        yield where, ds
        if 'dataset' in ds:
            yield from walk(f'{where}.dataset', ds['dataset'])
        for i, sub in enumerate(ds.get('datasets', None) or []):
            yield from walk(f'{where}.datasets.{i}', sub)

    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader_cfg = cfg.get(loader, None)
        if isinstance(loader_cfg, dict) and 'dataset' in loader_cfg:
            yield from walk(f'{loader}.dataset', loader_cfg['dataset'])


def check_data_roots(cfg: Config, loaders=None) -> None:
    """Fail early when a dataset's ``data_root`` or ``ann_file`` is missing.

    Args:
        cfg (Config): The full config.
        loaders (Sequence[str], optional): Only check these dataloaders,
            e.g. ``('test_dataloader',)``. Defaults to all three.

    Raises:
        FileNotFoundError: naming the config key and the missing path.
    """
    for where, ds in _dataset_cfgs(cfg):
        if loaders is not None and where.split('.')[0] not in loaders:
            continue
        root = ds.get('data_root', None)
        if isinstance(root, str) and root and '://' not in root:
            if not osp.isdir(root):
                raise FileNotFoundError(
                    f'data root of {where} does not exist: {root!r} '
                    f'(config {cfg.filename})')
        ann = ds.get('ann_file', None)
        if isinstance(ann, str) and ann and '://' not in ann:
            path = ann if osp.isabs(ann) or not root else osp.join(root, ann)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'annotation file of {where} does not exist: {path!r} '
                    f'(config {cfg.filename})')
