"""--cfg-options checks, data-root checks and the shared folder."""
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet_odam.utils import (check_data_roots, merge_cfg_options, repo_root,
                              shared_dir)

FCOS = 'configs/tiny/fcos_tiny_coco-person.py'


@pytest.fixture
def cfg(repo_root):
    return Config.fromfile(str(repo_root / FCOS))


def test_existing_keys_merge(cfg):
    merge_cfg_options(
        cfg, {
            'train_cfg.max_iters': 2,
            'train_dataloader.dataset.pipeline.2.scale': (96, 96)
        })
    assert cfg.train_cfg.max_iters == 2
    assert cfg.train_dataloader.dataset.pipeline[2].scale == (96, 96)


@pytest.mark.parametrize('key, missing, parent', [
    ('model.backbone.depht', 'depht', 'model.backbone'),
    ('work_dirr', 'work_dirr', '<top level>'),
    ('train_dataloader.dataset.pipeline.9.scale', '9',
     'train_dataloader.dataset.pipeline'),
    ('train_cfg.max_iters.x', 'x', 'train_cfg.max_iters'),
])
def test_unknown_key_raises_naming_it(cfg, key, missing, parent):
    before = cfg.to_dict()
    with pytest.raises(KeyError) as err:
        merge_cfg_options(cfg, {'train_cfg.max_iters': 2, key: 1})
    msg = str(err.value)
    assert repr(key) in msg and f'no {missing!r} under {parent}' in msg
    assert cfg.to_dict() == before  # nothing merged


def test_plus_prefix_adds_new_key(cfg):
    merge_cfg_options(cfg, {'+model.test_cfg.nms.corr_low': 0.3})
    assert cfg.model.test_cfg.nms.corr_low == 0.3


def test_data_root_relative_to_config(cfg, shared_dir):
    root = Path(cfg.train_dataloader.dataset.data_root)
    assert root.resolve() == shared_dir / 'data' / 'coco_val2017_tiny80'
    check_data_roots(cfg)  # exists: no error


def test_missing_ann_file_named(cfg, tmp_path):
    cfg.val_dataloader.dataset.data_root = str(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        check_data_roots(cfg)
    assert 'val_dataloader.dataset' in str(err.value)
    assert str(tmp_path / 'annotations/instances_val2017.json') in str(
        err.value)
    check_data_roots(cfg, loaders=('train_dataloader', ))  # not checked


def test_shared_dir(monkeypatch, tmp_path):
    monkeypatch.delenv('MMDET_ODAM_SHARED', raising=False)
    assert shared_dir(must_exist=False) == (repo_root().parent /
                                            'shared').resolve()
    monkeypatch.setenv('MMDET_ODAM_SHARED', str(tmp_path))
    assert shared_dir() == tmp_path.resolve()
    monkeypatch.setenv('MMDET_ODAM_SHARED', str(tmp_path / 'gone'))
    with pytest.raises(FileNotFoundError, match='gone'):
        shared_dir()
