"""The registered ExplanationMetric on hand-made maps."""
import pytest
import torch
from mmdet.registry import METRICS

import mmdet_odam  # noqa: F401


def sample(with_masks=True):
    maps = torch.zeros(2, 20, 20)
    maps[0, 5, 5] = 1.0  # inside GT 0
    maps[1, 5, 5] = 1.0  # det 1 explains GT 1 but points at GT 0
    maps[1, 15, 15] = 1.0
    gt = dict(bboxes=torch.tensor([[0., 0, 10, 10], [10., 10, 20, 20]]),
              labels=torch.tensor([0, 0]))
    if with_masks:
        m = torch.zeros(2, 20, 20, dtype=torch.bool)
        m[0, :10, :10] = True
        m[1, 12:, 12:] = True
        gt['masks'] = m.numpy()
    pred = dict(bboxes=torch.tensor([[0., 0, 10, 10], [10., 10, 20, 20]]),
                labels=torch.tensor([0, 0]), scores=torch.tensor([.9, .8]),
                odam_maps=maps)
    return dict(pred_instances=pred, gt_instances=gt, ori_shape=(20, 20))


def test_explanation_metric_values():
    metric = METRICS.build(dict(type='ExplanationMetric'))
    metric.dataset_meta = dict(classes=('person', ))
    metric.process({}, [sample()])
    res = metric.evaluate(1)
    assert res['expl/n_objects'] == 2
    # object 0: hit, all energy inside; object 1: first max at (5, 5) -> miss
    assert res['expl/pg_box'] == pytest.approx(0.5)
    assert res['expl/enpg_box'] == pytest.approx((1.0 + 0.5) / 2)
    # object 1: half of its on-object energy is on object 0
    assert res['expl/odi_box'] == pytest.approx((0.0 + 0.5) / 2)
    assert res['expl/pg_mask'] == pytest.approx(0.5)


def test_explanation_metric_without_masks_and_missing_maps():
    metric = METRICS.build(dict(type='ExplanationMetric', iou_thr=0.5))
    metric.dataset_meta = dict(classes=('person', ))
    metric.process({}, [sample(with_masks=False)])
    res = metric.evaluate(1)
    assert 'expl/pg_mask' not in res and res['expl/pg_box'] == 0.5
    bad = sample()
    del bad['pred_instances']['odam_maps']
    with pytest.raises(KeyError, match='odam_maps'):
        metric.process({}, [bad])
    with pytest.raises(ValueError, match='iou_thr'):
        METRICS.build(dict(type='ExplanationMetric', iou_thr=1.5))
