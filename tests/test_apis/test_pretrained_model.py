"""The shipped person detector through the public API, as `make demo` uses
it on a fresh clone (no generated data under data/)."""
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs/pretrained/fcos_mobilenetv2_crowd-person.py'
CHECKPOINT = ROOT / 'checkpoints/fcos_mobilenetv2_crowd-person.pth'
IMAGE = ROOT / 'demo/images/000000005001.jpg'


def test_default_model_explains_a_demo_photograph(monkeypatch, tmp_path):
    from mmdet_odam.apis import explain_image, init_explainer

    # the config's test set (data/crowd_scenes) must not be needed
    monkeypatch.chdir(tmp_path)
    model = init_explainer(str(CONFIG), str(CHECKPOINT))
    assert model.dataset_meta['classes'] == ('person', )
    expl = explain_image(model, str(IMAGE), targets=('cls', 'combined'),
                         score_thr=0.3, topk=5)
    h, w = expl.ori_shape[:2]
    assert len(expl) >= 3  # the photograph shows 7-13 people
    for t in ('cls', 'combined'):
        maps = expl.maps[t].numpy()
        assert maps.shape == (len(expl), h, w)
        assert maps.min() >= 0 and np.isclose(maps.max(), 1.0)
    # instance specificity: each cls map peaks inside (or at the edge of)
    # the box it explains
    for k in range(len(expl)):
        y, x = np.unravel_index(expl.maps['cls'][k].numpy().argmax(), (h, w))
        x1, y1, x2, y2 = expl.bboxes[k].tolist()
        assert x1 - 2 <= x <= x2 + 2 and y1 - 2 <= y <= y2 + 2


def test_lazy_dataset_build_needs_no_data(tmp_path):
    """mmdet's init_detector builds the test set with lazy_init=True for its
    metainfo: that must work without the data; loading it must not."""
    import mmdet_odam  # noqa: F401
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = dict(
        type='OdamCrowdHumanDataset',
        data_root=str(tmp_path / 'missing'),
        ann_file='val/annotation_val.odgt',
        extra_ann_file='val/id_hw_val.json',
        data_prefix=dict(img='val/images/'),
        pipeline=[])
    ds = DATASETS.build(dict(cfg, lazy_init=True))
    assert ds.metainfo['classes'] == ('person', )
    with pytest.raises(FileNotFoundError, match='missing'):
        ds.full_init()
    with pytest.raises(FileNotFoundError, match='missing'):
        DATASETS.build(cfg)
