"""CrowdHuman figures on resampled images agree with CrowdHumanMetric."""
import json

import numpy as np
import pytest
import torch

from mmdet_odam.evaluation.nms_intervals import (crowd_figures,
                                                 load_gt_records,
                                                 nms_intervals)


def _gt(i, boxes):
    return dict(ID=f'im{i}', gtboxes=[
        dict(tag='person', fbox=b, hbox=b, vbox=b, extra={}, head_attr={})
        for b in boxes])


@pytest.fixture
def data(tmp_path):
    gts = [_gt(0, [[10, 10, 40, 80], [60, 10, 40, 80]]),
           _gt(1, [[20, 20, 50, 90]])]
    ann = tmp_path / 'val.odgt'
    ann.write_text('\n'.join(json.dumps(g) for g in gts) + '\n')
    # image 0: one hit, one miss, one false positive; image 1: one hit
    dets = [torch.tensor([[10., 10, 50, 90, .9], [150, 150, 190, 230, .8]]),
            torch.tensor([[20., 20, 70, 110, .7]])]
    samples = [dict(img_id=f'im{i}', ori_shape=(300, 300),
                    pred_instances=dict(bboxes=d[:, :4], scores=d[:, 4]))
               for i, d in enumerate(dets)]
    cfg = dict(type='CrowdHumanMetric', ann_file=str(ann),
               metric=['AP', 'MR', 'JI'])
    return samples, cfg


def test_matches_crowdhuman_metric(data):
    from mmdet.registry import METRICS
    from mmdet.utils import register_all_modules
    register_all_modules()
    samples, cfg = data
    metric = METRICS.build(dict(cfg))
    metric.process({}, samples)
    ref = metric.compute_metrics(metric.results)
    gt = load_gt_records(cfg['ann_file'])
    got = crowd_figures(samples, gt, cfg)
    assert got == pytest.approx(
        100 * np.array([ref['mAP'], ref['mMR'], ref['JI']]))
    # a draw with a repeated image is a valid set of three images
    rep = crowd_figures([samples[1], samples[1], samples[0]], gt, cfg)
    assert np.isfinite(rep).all()
    # image 1 alone: its one person found, no false positive -> JI 100
    assert crowd_figures([samples[1]], gt, cfg)[2] == pytest.approx(100)


def test_nms_intervals_on_cached_candidates(data, tmp_path):
    from mmdet.utils import register_all_modules
    register_all_modules()
    samples, cfg = data
    images = [dict(img_id=s['img_id'], ori_shape=s['ori_shape'],
                   boxes=s['pred_instances']['bboxes'],
                   scores=s['pred_instances']['scores'],
                   labels=torch.zeros(len(s['pred_instances']['scores']),
                                      dtype=torch.long),
                   corr=torch.eye(len(s['pred_instances']['scores'])))
              for s in samples]
    res = nms_intervals(images, cfg, 0.5, [(0., 1.), (0.2, 0.8)], n_boot=20)
    assert res['images'] == 2
    for key in ('0.0,1.0', '0.2,0.8'):
        for v, lo, hi in res[key].values():
            assert lo <= v + 1e-9 or np.isclose(lo, v)
            assert lo <= hi
    # no overlapping boxes: both post-processings keep everything
    assert res['0.0,1.0'] == res['0.2,0.8']
