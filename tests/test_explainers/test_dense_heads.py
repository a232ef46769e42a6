"""Odam dense heads: candidate tracking and the Odam-NMS branch."""
import copy

import torch
from mmdet.registry import MODELS
from mmengine.config import ConfigDict

from mmdet_odam.core import Candidates
from mmdet_odam.explainers.dense import (dense_candidate_maps,
                                         tracked_predict_by_feat)
from odam_tiny_models import build_detector, detector_cfg, fake_batch


def test_tracking_matches_plain_mmdet_head():
    """Same boxes/scores/labels as the plain mmdet head; tracked indices
    point at the candidate that produced each row."""
    for kind in ('fcos', 'retina', 'atss'):
        model = build_detector(kind)
        inputs, samples = fake_batch(model, n=2)
        cfg = detector_cfg(kind)
        cfg['bbox_head']['type'] = cfg['bbox_head']['type'].replace('Odam',
                                                                    '')
        plain = MODELS.build(cfg)
        plain.load_state_dict(model.state_dict())
        plain.eval()
        plain.bbox_head.test_cfg = ConfigDict(plain.bbox_head.test_cfg)
        # predict() writes into the data samples: keep our results first
        ours = [s.pred_instances for s in model.predict(inputs, samples)]
        ref = [s.pred_instances for s in plain.predict(inputs, samples)]
        for o, r in zip(ours, ref):
            assert torch.equal(o.labels, r.labels)
            assert torch.allclose(o.bboxes, r.bboxes)
            assert torch.allclose(o.scores, r.scores)
        with torch.no_grad():
            feats = model.extract_feat(inputs)
            outs = plain.bbox_head(feats)
        tr = tracked_predict_by_feat(
            plain.bbox_head, *outs,
            batch_img_metas=[s.metainfo for s in samples], rescale=True)
        for t, o in zip(tr, ours):
            # plain head + tracking function gives the same indices
            assert torch.equal(t.loc_inds, o.loc_inds)
            assert torch.equal(t.level_ids, o.level_ids)
        # the tracked cell really holds that score
        a = model.bbox_head.num_base_priors
        p = ours[0]
        for i in range(min(5, len(p))):
            lvl, loc = int(p.level_ids[i]), int(p.loc_inds[i])
            w = feats[lvl].shape[-1]
            c = outs[0][lvl][0, (loc % a) * model.bbox_head.cls_out_channels +
                             int(p.labels[i]), (loc // a) // w,
                             (loc // a) % w].sigmoid()
            if len(outs) > 2:
                c = c * outs[2][lvl][0, loc % a, (loc // a) // w,
                                     (loc // a) % w].sigmoid()
            assert torch.isclose(c, p.scores[i], atol=1e-6)


def test_odam_nms_branch_and_loss_odam_kwarg():
    cfg = detector_cfg('fcos')
    cfg = copy.deepcopy(cfg)
    cfg['test_cfg']['nms'] = dict(type='odam_nms', iou_threshold=0.6,
                                  corr_low=0.2, corr_high=0.8)
    cfg['bbox_head']['loss_odam'] = None
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    assert model.bbox_head.loss_odam is None
    inputs, samples = fake_batch(model)
    res = model.predict(inputs, samples)[0].pred_instances
    assert len(res) > 0
    assert res.odam_maps.shape[0] == len(res)
    # kept maps are the cls maps of those candidates
    with torch.no_grad():
        feats = model.extract_feat(inputs)
    maps = dense_candidate_maps(
        model.bbox_head, feats,
        Candidates.of_image(res.level_ids, res.loc_inds, res.labels,
                            res.input_bboxes),
        out_size=tuple(res.odam_maps.shape[-2:]),
        pad_shape=inputs.shape[-2:])
    assert torch.allclose(maps, res.odam_maps, atol=1e-5)
    for m in model.modules():
        assert not m._forward_hooks
