"""Every shipped config loads and builds its model; every Odam-Train config
is its baseline's recipe plus the loss (same model, data, schedule)."""
import copy
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import mmdet_odam  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if '_base_' not in p.parts)
TWINS = [  # (baseline, Odam-Train twin, head holding loss_odam)
    ('configs/pretrained/fcos_mobilenetv2_crowd-person.py',
     'configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py',
     'bbox_head'),
    ('configs/pretrained/fcos_mobilenetv2_crowd-person_cpu.py',
     'configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu.py',
     'bbox_head'),
    ('configs/pretrained/faster-rcnn_mobilenetv2_crowd-person.py',
     'configs/odam_train/faster-rcnn_mobilenetv2_fpn_odam-train_crowd-scenes.py',
     'roi_head'),
]


def _strip_odam(cfg: Config, head: str):
    """(config dict without the head's ``loss_odam`` and ``Odam`` type
    prefix, the removed ``loss_odam``)."""
    d = copy.deepcopy(cfg._cfg_dict.to_dict())
    h = d['model'][head]
    loss = h.pop('loss_odam', None)
    if h.get('type', '').startswith('Odam'):
        h['type'] = h['type'][len('Odam'):]
    return d, loss


def test_config_list_is_not_empty():
    assert len(CONFIGS) > 30


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_builds(path):
    register_all_modules()
    cfg = Config.fromfile(str(ROOT / path))
    if 'model' not in cfg:  # a fragment to paste: its hooks must build
        from mmengine.registry import HOOKS
        assert cfg.custom_hooks
        for hook in cfg.custom_hooks:
            HOOKS.build(copy.deepcopy(hook))
        return
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.get('backbone', {}).pop('init_cfg', None)
    model = MODELS.build(model_cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize('base,twin,head', TWINS)
def test_odam_train_twin_is_baseline_plus_loss(base, twin, head):
    b, loss_b = _strip_odam(Config.fromfile(str(ROOT / base)), head)
    t, loss_t = _strip_odam(Config.fromfile(str(ROOT / twin)), head)
    assert loss_b is None
    assert loss_t['type'] == 'OdamTrainLoss'
    assert b == t
