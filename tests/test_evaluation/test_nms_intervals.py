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
    # a setting equal to the first differs from it by exactly 0 on every draw
    assert res['0.2,0.8 - 0.0,1.0'] == {f: [0.0, 0.0, 0.0]
                                        for f in ('AP', 'MR', 'JI')}


def test_paired_difference_is_per_draw(data):
    """A duplicate that Odam-NMS keeps (low map correlation): the reported
    difference is the figure difference, and its interval the percentile
    interval of the per-draw differences on the same resampled images."""
    from mmdet.utils import register_all_modules

    from mmdet_odam.evaluation.functional.bootstrap import bootstrap_images
    from mmdet_odam.evaluation.nms_intervals import post_process
    register_all_modules()
    samples, cfg = data
    boxes = torch.tensor([[10., 10, 50, 90], [12, 10, 52, 90],
                          [150, 150, 190, 230]])
    images = [dict(img_id='im0', ori_shape=(300, 300), boxes=boxes,
                   scores=torch.tensor([.9, .85, .8]),
                   labels=torch.zeros(3, dtype=torch.long),
                   corr=torch.eye(3)),
              dict(img_id='im1', ori_shape=(300, 300),
                   boxes=torch.tensor([[20., 20, 70, 110]]),
                   scores=torch.tensor([.7]),
                   labels=torch.zeros(1, dtype=torch.long),
                   corr=torch.eye(1))]
    settings = [(0., 1.), (0.2, 0.8)]
    res = nms_intervals(images, cfg, 0.5, settings, n_boot=30, seed=3)
    gt = load_gt_records(cfg['ann_file'])
    post = [post_process(images, 0.5, lo, hi) for lo, hi in settings]
    assert [len(p[0]['pred_instances']['bboxes']) for p in post] == [2, 3]

    def diff(idx):
        a, b = (crowd_figures([p[i] for i in idx], gt, cfg) for p in post)
        return b - a

    v, lo, hi = bootstrap_images(diff, 2, 30, seed=3)
    got = np.array(res['0.2,0.8 - 0.0,1.0']['JI'])
    assert got == pytest.approx([v[2], lo[2], hi[2]])
    assert got[0] == pytest.approx(res['0.2,0.8']['JI'][0] -
                                   res['0.0,1.0']['JI'][0])
    assert got[0] < 0  # the kept duplicate is a false positive


def test_difference_to_a_baseline_detector(data):
    """Against another detector's candidates on the same images: the paired
    difference per setting; other images are refused by name."""
    from mmdet.utils import register_all_modules
    register_all_modules()
    samples, cfg = data

    def cached(extra_fp):
        out = []
        for s in samples:
            boxes, scores = (s['pred_instances']['bboxes'],
                             s['pred_instances']['scores'])
            if extra_fp and s['img_id'] == 'im1':
                boxes = torch.cat([boxes, torch.tensor([[200., 20, 240,
                                                         100]])])
                scores = torch.cat([scores, torch.tensor([.95])])
            out.append(dict(img_id=s['img_id'], ori_shape=s['ori_shape'],
                            boxes=boxes, scores=scores,
                            labels=torch.zeros(len(scores),
                                               dtype=torch.long),
                            corr=torch.eye(len(scores))))
        return out

    this, base = cached(False), cached(True)
    res = nms_intervals(this, cfg, 0.5, [(0., 1.), (0.2, 0.8)], n_boot=20,
                        baseline=base)
    for key in ('0.0,1.0', '0.2,0.8'):
        d = res[f'{key} - baseline {key}']['JI']
        assert d[0] == pytest.approx(res[key]['JI'][0] -
                                     res[f'baseline {key}']['JI'][0])
        assert d[0] > 0 and d[1] <= d[0] <= d[2]  # one false positive less
    with pytest.raises(ValueError, match='other images'):
        nms_intervals(this, cfg, 0.5, [(0., 1.)], n_boot=2,
                      baseline=base[::-1])
