"""mmcv deformable convolutions back-propagated through torch ops: the
hooked layer's values stay mmcv's bit for bit, its gradients equal mmcv's
backward (float64), the hooks leave with their call, and the explained maps
of the zoo's deformable heads equal those of mmcv's own backward."""
import copy

import pytest
import torch
from mmcv.ops import (DeformConv2d, DeformConv2dPack, ModulatedDeformConv2d,
                      ModulatedDeformConv2dPack)

from mmdet_odam.adapters.deform_conv import (add_deform_conv_hooks,
                                             deform_conv_modules)
from mmdet_odam.explainers.base import HookList
from mmdet_odam.testing import ZOO, build_zoo_model, float64_nms, zoo_inputs


def _module(kind):
    torch.manual_seed(0)
    m = {'dcn': lambda: DeformConv2d(6, 4, 3, padding=1, deform_groups=2),
         'mdcn': lambda: ModulatedDeformConv2d(6, 4, 3, padding=2,
                                               dilation=2),
         'dcn_pack': lambda: DeformConv2dPack(6, 4, 3, padding=1),
         'mdcn_pack': lambda: ModulatedDeformConv2dPack(6, 4, 3, stride=2,
                                                        padding=1)}[kind]()
    m = m.double()
    if hasattr(m, 'conv_offset'):  # mmcv zero-initialises them
        torch.nn.init.normal_(m.conv_offset.weight, std=0.5)
    return m.eval().requires_grad_(False)


def _call(m, x):
    if isinstance(m, (DeformConv2dPack, ModulatedDeformConv2dPack)):
        return m(x), [x]
    b, _, h, w = x.shape
    k = m.kernel_size[0] * m.kernel_size[1] * m.deform_groups
    g = torch.Generator().manual_seed(1)
    off = (torch.randn(b, 2 * k, h, w, generator=g, dtype=x.dtype) * 2
           ).requires_grad_()
    if isinstance(m, ModulatedDeformConv2d):
        mask = torch.rand(b, k, h, w, generator=g,
                          dtype=x.dtype).requires_grad_()
        return m(x, off, mask), [x, off, mask]
    return m(x, off), [x, off]


@pytest.mark.parametrize('kind', ['dcn', 'mdcn', 'dcn_pack', 'mdcn_pack'])
def test_hooked_layer_keeps_values_and_mmcv_gradient(kind):
    m = _module(kind)
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    ref, leaves = _call(m, x.clone().requires_grad_())
    hooks = HookList()
    assert add_deform_conv_hooks(m, hooks) == 1
    out, leaves_h = _call(m, x.clone().requires_grad_())
    hooks.remove()
    assert not m._forward_hooks
    assert torch.equal(out, ref)
    g = torch.randn(ref.shape, dtype=ref.dtype,
                    generator=torch.Generator().manual_seed(3))
    mine = torch.autograd.grad(out, leaves_h, g)
    theirs = torch.autograd.grad(ref, leaves, g)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_overridden_forward_and_no_grad_are_left_to_mmcv(monkeypatch):
    import mmdet_odam.adapters.deform_conv as adapter
    calls = []
    torch_path = adapter.deform_conv2d_torch
    monkeypatch.setattr(adapter, 'deform_conv2d_torch',
                        lambda *a, **k: calls.append(1) or torch_path(*a,
                                                                      **k))

    class MyDCN(DeformConv2d):
        def forward(self, x, offset):
            return super().forward(x, offset) * 2

    model = torch.nn.ModuleList([MyDCN(4, 4, 3, padding=1),
                                 DeformConv2d(4, 4, 3, padding=1)])
    assert deform_conv_modules(model) == [model[1]]
    hooks = HookList()
    add_deform_conv_hooks(model, hooks)
    x, off = torch.randn(1, 4, 5, 5), torch.randn(1, 18, 5, 5)
    with torch.no_grad():  # nothing to differentiate: mmcv's output as is
        model[1](x, off)
    model[0](x, off.requires_grad_())  # an override: not hooked
    assert calls == []
    model[1](x, off)
    assert calls == [1]
    hooks.remove()


def _deformable_families():
    return [n for n in ('VFNet', 'RepPoints', 'DDOD') if n in ZOO]


@pytest.mark.parametrize('name', _deformable_families())
def test_zoo_maps_equal_mmcv_backward(name):
    from mmdet_odam.explainers import build_explainer
    model = build_zoo_model(name)
    assert deform_conv_modules(model), f'{name} has no deformable layer'
    inputs, samples = zoo_inputs(model)
    if ZOO[name].float64:
        model, inputs = copy.deepcopy(model).double(), inputs.double()
    exps = []
    for torch_grads in (True, False):
        ex = build_explainer(model, targets=['cls', 'left', 'bottom'],
                             verify='never')
        ex.torch_deform_grads = torch_grads
        with float64_nms():
            exps.append(ex.explain(inputs, samples, score_thr=0.0,
                                   topk=3)[0])
    a, b = exps
    assert torch.equal(a.bboxes, b.bboxes)
    for t in ('cls', 'left', 'bottom'):
        scale = b.maps[t].flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        err = ((a.maps[t] - b.maps[t]).abs() / scale).amax()
        assert err <= 1e-4, f'{name} {t}: {err:.2e}'
    assert not any(m._forward_hooks for m in deform_conv_modules(model))


def test_explain_support_names_the_deformable_layers():
    from mmdet_odam.apis import explain_support
    report = explain_support(build_zoo_model('VFNet'))
    assert len(report.notes) == 1 and 'deformable' in report.notes[0]
    assert report.notes[0] in str(report)
    assert explain_support(build_zoo_model('GFL')).notes == ()
