"""CrowdRecallMetric on hand-made GT/detections with hand-computed values."""
import json
import math

import pytest
import torch

from mmdet.registry import METRICS
from mmdet_odam.evaluation.metrics.crowd_recall_metric import crowd_gt_mask


def _gt(fbox, tag='person'):
    return dict(fbox=fbox, vbox=fbox, hbox=[fbox[0], fbox[1], 1, 1],
                tag=tag, extra=dict(ignore=0))


def _write_odgt(path):
    recs = [
        # GT1/GT2 overlap with IoU 160/240 = 0.667 (crowd), GT3 sparse
        dict(ID='img1', gtboxes=[_gt([0, 0, 10, 20]), _gt([2, 0, 10, 20]),
                                 _gt([50, 0, 10, 20])]),
        # one sparse GT and an ignore region ('mask')
        dict(ID='img2', gtboxes=[_gt([10, 10, 20, 40]),
                                 _gt([60, 60, 30, 30], tag='mask')]),
    ]
    with open(path, 'w') as f:
        for r in recs:
            f.write(json.dumps(r) + '\n')


def _sample(img_id, dets):
    dets = torch.tensor(dets, dtype=torch.float32).reshape(-1, 5)
    return dict(img_id=img_id, ori_shape=(100, 100),
                pred_instances=dict(bboxes=dets[:, :4], scores=dets[:, 4]))


def test_crowd_gt_mask():
    import numpy as np
    gt = np.array([[0, 0, 10, 20], [2, 0, 12, 20], [50, 0, 60, 20.]])
    assert crowd_gt_mask(gt).tolist() == [True, True, False]
    assert crowd_gt_mask(gt, 0.7).tolist() == [False, False, False]
    assert crowd_gt_mask(gt[:1]).tolist() == [False]


def test_crowd_recall_hand_computed(tmp_path):
    ann = tmp_path / 'ann.odgt'
    _write_odgt(ann)
    metric = METRICS.build(dict(type='CrowdRecallMetric', ann_file=str(ann)))
    samples = [
        _sample('img1', [[0, 0, 10, 20, 0.9],     # GT1 (crowd)
                         [50, 0, 60, 20, 0.8],    # GT3 (sparse)
                         [80, 50, 90, 60, 0.25]]),  # false positive
        _sample('img2', [[10, 10, 30, 50, 0.95],   # GT4 (sparse)
                         [65, 65, 80, 80, 0.5]]),  # inside ignore region
    ]
    metric.process({}, samples)
    out = metric.compute_metrics(metric.results)
    # per threshold (img1, img2): t<0.25: (2/4, 1); 0.25<=t<0.8: (2/3, 1);
    # t=0.8: (1/3, 1); t=0.9: (0, 1) -> best 0.8333 at t=0.3
    assert math.isclose(out['JI'], (2 / 3 + 1) / 2, abs_tol=1e-5)
    assert math.isclose(out['score_thr'], 0.3, abs_tol=1e-9)
    assert out['num_gt'] == 4 and out['num_gt_crowd'] == 2 and \
        out['num_gt_sparse'] == 2
    assert out['recall_crowd'] == pytest.approx(0.5)
    assert out['recall_sparse'] == pytest.approx(1.0)
    assert out['recall'] == pytest.approx(0.75)

    # the second crowd GT detected with a low score: best JI moves to t=0.0
    metric2 = METRICS.build(dict(type='CrowdRecallMetric', ann_file=str(ann)))
    samples[0]['pred_instances']['bboxes'] = torch.cat([
        samples[0]['pred_instances']['bboxes'],
        torch.tensor([[2., 0., 12., 20.]])])
    samples[0]['pred_instances']['scores'] = torch.cat([
        samples[0]['pred_instances']['scores'], torch.tensor([0.05])])
    metric2.process({}, samples)
    out2 = metric2.compute_metrics(metric2.results)
    # t=0.0: img1 k=3, m=3, n=4 -> 3/4; img2 1 -> 0.875 (> 0.8333)
    assert math.isclose(out2['JI'], 0.875, abs_tol=1e-5)
    assert out2['score_thr'] == 0.0
    assert out2['recall_crowd'] == pytest.approx(1.0)


def test_crowd_recall_bad_args(tmp_path):
    with pytest.raises(ValueError, match='crowd_iou_thr'):
        METRICS.build(dict(type='CrowdRecallMetric', ann_file='x.odgt',
                           crowd_iou_thr=2))
