"""The ``mask`` target: what made each detection's mask (Mask R-CNN)."""
import math

import pytest
import torch

from mmdet_odam.core import level_to_image, minmax_normalize, odam_map
from mmdet_odam.explainers import build_explainer
from mmdet_odam.explainers.generic import infer_stride, keep_head_grads
from mmdet_odam.testing import build_zoo_model, zoo_inputs


@pytest.fixture(scope='module')
def mask_rcnn():
    model = build_zoo_model('Mask R-CNN')
    return model, zoo_inputs(model)


def oracle(model, inputs, samples, k_top):
    """One backward per detection of sum(mask logits inside the mask)."""
    feats, logits = [], []

    def neck_hook(mod, inp, out):
        leaves = [o.detach().requires_grad_(True) for o in out]
        feats.extend(leaves)
        return tuple(leaves)

    hs = [model.neck.register_forward_hook(neck_hook),
          model.roi_head.mask_head.register_forward_hook(
              lambda m, i, o: logits.append(o))]
    try:
        with torch.enable_grad(), keep_head_grads(False):
            res = model.predict(inputs, [s.new() for s in samples],
                                rescale=True)[0]
    finally:
        for h in hs:
            h.remove()
    inst = res.pred_instances
    order = torch.argsort(inst.scores.detach(), descending=True)[:k_top]
    thr = model.roi_head.test_cfg.mask_thr_binary
    meta = res.metainfo
    pad = inputs.shape[-2:]
    out = []
    for k in order.tolist():
        m = logits[0][k, int(inst.labels[k])]
        y = (m * (m > math.log(thr / (1 - thr))).float()).sum()
        gs = torch.autograd.grad(y, feats, retain_graph=True,
                                 allow_unused=True)
        total = 0
        for g, a in zip(gs, feats):
            if g is None:
                continue
            s = (infer_stride(pad[0], a.shape[-2]),
                 infer_stride(pad[1], a.shape[-1]))
            total = total + level_to_image(
                odam_map(g, a.detach()), s, meta['img_shape'][:2],
                meta['ori_shape'][:2], meta['scale_factor'])
        out.append(total)
    return minmax_normalize(torch.cat(out))


def test_mask_maps_equal_per_detection_autograd(mask_rcnn):
    model, (inputs, samples) = mask_rcnn
    exp = build_explainer(model, targets=['cls', 'mask'],
                          smoothing='none')
    assert type(exp).__name__ == 'GenericExplainer'
    e = exp.explain(inputs, samples, score_thr=0.0, topk=3)[0]
    ref = oracle(model, inputs, samples, 3)
    assert e.maps['mask'].shape == ref.shape == (3, *samples[0].ori_shape)
    assert (e.maps['mask'] - ref).abs().max() < 1e-4
    assert (e.maps['mask'].flatten(1).amax(1) > 0.999).all()
    assert not torch.allclose(e.maps['mask'][0], e.maps['mask'][1])
    assert not torch.allclose(e.maps['mask'], e.maps['cls'])


def test_mask_target_needs_a_mask_head():
    model = build_zoo_model('FCOS')
    with pytest.raises(ValueError, match='RoI mask head'):
        build_explainer(model, targets=['mask'])
    with pytest.raises(ValueError, match="target 'mask' is not available"):
        build_explainer(model, method='odam_dense', targets=['mask'])
