"""Dispatch by capability: adapters probe what a head does, decline with
reasons, the exact generic path takes the rest, and explained detections
are verified against ``model.predict``."""
import logging

import pytest
import torch
from mmdet.registry import MODELS

from mmdet_odam.adapters import (equivalent_override, probe_dense_detector,
                                 resolve)
from mmdet_odam.apis import explain_support
from mmdet_odam.explainers import build_explainer
from tests.test_explainers.odam_tiny_models import (build_detector,
                                                    detector_cfg, fake_batch)


def _with_head_class(model, **methods):
    """Give ``model.bbox_head`` a subclass of its class with ``methods``."""
    head = model.bbox_head
    head.__class__ = type(f'My{type(head).__name__}', (type(head), ),
                          methods)
    return model


def test_overriding_a_mirrored_method_is_declined_by_name():
    model = _with_head_class(build_detector('fcos'),
                             _predict_by_feat_single=lambda self, *a, **k: 0)
    support = probe_dense_detector(model)
    assert not support.ok
    assert any('_predict_by_feat_single' in r for r in support.reasons)
    res = resolve(model)
    assert res.adapter.name == 'generic'
    assert res.declined[0][0] == 'dense'


def test_overriding_only_the_loss_keeps_the_fast_adapter():
    model = _with_head_class(build_detector('retina'),
                             loss=lambda self, *a, **k: {})
    assert probe_dense_detector(model).ok
    assert resolve(model).adapter.name == 'dense'


def test_declined_head_is_explained_by_the_generic_path():
    from mmdet.models.dense_heads import FCOSHead

    def forward_single(self, x, scale, stride):  # same result, own method
        return FCOSHead.forward_single(self, x, scale, stride)

    model = _with_head_class(build_detector('fcos'),
                             forward_single=forward_single)
    exp = build_explainer(model, targets=['cls', 'left'], verify='always')
    assert type(exp).__name__ == 'GenericExplainer'
    inputs, samples = fake_batch(model)
    out = exp.explain(inputs, samples, score_thr=0.0, topk=3)[0]
    with torch.no_grad():
        pred = model.predict(inputs, [s.new() for s in samples],
                             rescale=True)[0].pred_instances
    torch.testing.assert_close(out.scores, pred.scores[:3])
    assert out.maps['cls'].shape == (3, 70, 100)


def test_a_mismatch_with_predict_falls_back_to_the_generic_path(caplog):
    """A head whose predict differs from what the dense explainer mirrors
    (here: halved scores behind an override marked equivalent) is caught
    by the predict check; the generic path then explains predict's own
    detections."""

    def predict(self, x, samples, rescale=False):
        res = type(self).__mro__[1].predict(self, x, samples, rescale)
        for r in res:
            r.scores = r.scores * 0.5
        return res

    model = _with_head_class(build_detector('fcos'),
                             predict=equivalent_override(predict))
    exp = build_explainer(model, targets=['cls'], verify='always')
    assert type(exp).__name__ == 'DenseHeadExplainer'
    inputs, samples = fake_batch(model)
    with caplog.at_level(logging.WARNING):
        out = exp.explain(inputs, samples, score_thr=0.0, topk=4)[0]
    with torch.no_grad():
        pred = model.predict(inputs, [s.new() for s in samples],
                             rescale=True)[0].pred_instances
    torch.testing.assert_close(out.scores, pred.scores[:4])
    torch.testing.assert_close(out.bboxes, pred.bboxes[:4])
    assert out.method == 'odam'


def test_gradcam_refuses_a_declined_detector_with_the_reason():
    model = _with_head_class(build_detector('fcos'),
                             forward=lambda self, x: None)
    with pytest.raises(ValueError, match='overrides forward'):
        build_explainer(model, method='gradcam')


@pytest.mark.parametrize('gn,path,expected', [
    (False, 'auto', ('patch', True)),
    (True, 'auto', ('level_autograd', True)),
    (True, 'fast', ('patch', False)),
    (True, 'exact', ('level_autograd', True)),
])
def test_explain_support_reports_the_path_of_each_target(gn, path, expected):
    model = build_detector('fcos', gn=gn)
    report = explain_support(model, targets=['cls', 'top'], path=path)
    assert [r['target'] for r in report.rows] == ['cls', 'top']
    for row in report.rows:
        assert (row['path'], row['exact']) == expected
        assert row['adapter'] == 'dense'
    assert 'cls' in str(report)


def test_explain_support_of_a_declined_head_names_the_reasons():
    model = _with_head_class(build_detector('atss'),
                             forward=lambda self, x: None)
    row = explain_support(model).rows[0]
    assert (row['adapter'], row['path'], row['exact']) == ('generic',
                                                            'autograd', True)
    assert any('overrides forward' in r for r in row['reasons'])


@pytest.mark.parametrize('kind', ['retina', 'atss'])
def test_odam_train_on_heads_without_positives_fails_at_build(kind):
    cfg = detector_cfg(kind)
    cfg['bbox_head']['loss_odam'] = dict(type='OdamTrainLoss')
    with pytest.raises(ValueError, match='does not support Odam-Train'):
        MODELS.build(cfg)
