"""OdamHook: unit checks and an end-to-end tools/test.py run with and
without the hook (identical predictions and metrics)."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from mmdet_odam.engine.hooks import (OdamHook, odam_maps_to_image,
                                     preserved_rng_state)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'configs' / 'tiny' / 'fcos_tiny_coco-person.py'
HOOK_CFG = REPO / 'configs' / 'odam' / 'fcos_tiny_coco-person_odam-hook.py'
# three of the eight tiny test images keep the runs short
FEW = 'test_dataloader.dataset.indices=[0,1,7]'


def make_checkpoint(path):
    """Randomly initialised tiny FCOS, saved as an mmdet checkpoint."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(TINY))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(
        dict(state_dict=model.state_dict(),
             meta=dict(dataset_meta=dict(classes=('person', ),
                                         palette=[(220, 20, 60)]))), path)
    return path


def test_odam_maps_to_image_undoes_padding_and_resize():
    # padded input 64x64, image 48x64 (resized 0.5 from 96x128), maps 16x16
    meta = dict(batch_input_shape=(64, 64), img_shape=(48, 64),
                ori_shape=(96, 128), scale_factor=(0.5, 0.5))
    maps = torch.zeros(2, 16, 16)
    maps[0, 11, 15] = 1.0  # input rows 44-48, cols 60-64: bottom-right
    maps[1, 14, 3] = 1.0  # input rows 56-60: padding only
    maps[1, 0, 0] = 0.5  # top-left corner
    out = odam_maps_to_image(maps, meta)
    assert out.shape == (2, 96, 128)
    assert 0 <= out.min() and out.max() <= 1
    y, x = np.unravel_index(out[0].argmax().item(), (96, 128))
    assert y >= 88 and x >= 120  # bottom-right corner of the original
    # the padding peak is cut away: map 1 peaks at the top-left corner
    y, x = np.unravel_index(out[1].argmax().item(), (96, 128))
    assert y < 8 and x < 8
    assert out[1, 90:, 20:30].max() < 0.05


def test_hook_validates_options():
    with pytest.raises(ValueError, match='valid names: cls'):
        OdamHook(targets=['cls', 'size'])
    with pytest.raises(ValueError, match='score_thr'):
        OdamHook(score_thr=2)
    with pytest.raises(ValueError, match='smoothing'):
        OdamHook(smoothing='box')
    assert OdamHook(targets='cls,combined').targets == ['cls', 'combined']


def test_preserved_rng_state():
    torch.manual_seed(3)
    np.random.seed(3)
    with preserved_rng_state():
        torch.rand(5)
        np.random.rand(5)
    a, b = torch.rand(1), np.random.rand(1)
    torch.manual_seed(3)
    np.random.seed(3)
    assert torch.equal(a, torch.rand(1)) and b == np.random.rand(1)


def test_padding_samples_of_distributed_sampler_are_skipped():
    # 3 images on 2 ranks: rank 1 gets positions 1 and 3; 3 repeats image 0
    hook = OdamHook()
    hook._dedup = (1, 2, 3)
    flags = []
    for hook._seen in range(2):
        flags.append(hook._is_padding())
    assert flags == [False, True]
    hook._dedup = (0, 2, 3)
    hook._seen = 1
    assert not hook._is_padding()


def test_reuse_of_odam_nms_maps():
    hook = OdamHook(targets=['cls'], score_thr=0.3, topk=2)
    pred = InstanceData(
        bboxes=torch.tensor([[0., 0, 10, 10], [5, 5, 20, 20],
                             [1, 1, 4, 4]]),
        scores=torch.tensor([0.5, 0.9, 0.1]),
        labels=torch.tensor([0, 0, 0]),
        cand_inds=torch.tensor([7, 3, 9]),
        odam_maps=torch.rand(3, 8, 8))
    ds = DetDataSample(pred_instances=pred)
    assert not hook._reusable([ds])  # options not checked on a model yet
    hook._same_as_nms = True  # what before_test finds for path='fast'
    assert hook._reusable([ds])
    assert not hook._reusable([DetDataSample(pred_instances=pred[:0].new(
        bboxes=pred.bboxes, scores=pred.scores, labels=pred.labels))])
    meta = dict(batch_input_shape=(32, 32), img_shape=(32, 32),
                ori_shape=(16, 16), scale_factor=(2., 2.))
    e = hook._from_odam_maps(ds, meta)
    assert e.scores.tolist() == pytest.approx([0.9, 0.5])
    assert e.candidate_inds.tolist() == [3, 7]
    assert e.maps['cls'].shape == (2, 16, 16)
    ref = odam_maps_to_image(pred.odam_maps[[1, 0]], meta)
    assert torch.allclose(e.maps['cls'], ref)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _metrics(work_dir):
    (ts, ) = [p for p in Path(work_dir).iterdir() if p.is_dir()]
    with open(ts / f'{ts.name}.json') as f:
        m = json.load(f)
    return ts, {k: v for k, v in m.items() if k.startswith('coco/')}


def test_hook_under_dist_test_leaves_metrics_identical(tmp_path):
    """tools/test.py without the hook vs tools/dist_test.sh (2 CPU ranks)
    with it: identical predictions and metrics; each of the 3 images (the
    sampler pads rank 1 with a repeat of image 0) is written exactly once."""
    ckpt = make_checkpoint(tmp_path / 'tiny.pth')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO),
               PYTHON=sys.executable, PORT=str(_free_port()))
    plain = subprocess.Popen(
        [sys.executable, str(REPO / 'tools' / 'test.py'), str(TINY),
         str(ckpt), '--work-dir', str(tmp_path / 'plain'), '--out',
         str(tmp_path / 'plain.pkl'), '--cfg-options', FEW],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    hooked = subprocess.Popen(
        ['bash', str(REPO / 'tools' / 'dist_test.sh'), str(HOOK_CFG),
         str(ckpt), '2', '--work-dir', str(tmp_path / 'hook'), '--out',
         str(tmp_path / 'hook.pkl'), '--cfg-options', FEW],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    log_plain, _ = plain.communicate(timeout=600)
    log_hook, _ = hooked.communicate(timeout=600)
    assert plain.returncode == 0, log_plain[-3000:]
    assert hooked.returncode == 0, log_hook[-3000:]
    assert 'OdamHook: 3 explained image(s) written by 2 rank(s)' in log_hook

    with open(tmp_path / 'plain.pkl', 'rb') as f:
        preds_plain = pickle.load(f)
    with open(tmp_path / 'hook.pkl', 'rb') as f:
        preds_hook = pickle.load(f)
    assert len(preds_plain) == len(preds_hook) == 3
    for a, b in zip(preds_plain, preds_hook):
        assert a['img_path'] == b['img_path']
        pa, pb = a['pred_instances'], b['pred_instances']
        assert len(pa['scores']) > 0
        for k in ('bboxes', 'scores', 'labels'):
            assert torch.allclose(pa[k], pb[k], atol=1e-6), k
    ts_plain, m_plain = _metrics(tmp_path / 'plain')
    ts, m_hook = _metrics(tmp_path / 'hook')
    assert m_plain and m_plain == m_hook
    assert not (ts_plain / 'odam').exists()

    out = ts / 'odam'
    stems = sorted(Path(r['img_path']).stem for r in preds_hook)
    assert sorted(p.stem for p in out.glob('*.npz')) == stems
    for r in preds_hook:
        stem = Path(r['img_path']).stem
        with np.load(out / f'{stem}.npz') as z:
            h, w = r['ori_shape']
            k = len(z['boxes'])
            assert 1 <= k <= 5  # topk=5 in the hook config
            for t in ('cls', 'combined'):
                m = z[f'maps_{t}']
                assert m.shape == (k, h, w)
                assert m.min() >= 0 and m.max() <= 1 and m.max() > 0
            # the explained rows are the top-k predictions of the test run
            np.testing.assert_allclose(
                z['boxes'], r['pred_instances']['bboxes'][:k].numpy(),
                atol=1e-3)
        assert (out / f'{stem}_grid.jpg').is_file()
        assert len(list((out / stem).glob('det*_*.jpg'))) == 2 * k
    html = (out / 'index.html').read_text()
    assert all(f'{s}_grid.jpg' in html for s in stems)
    assert not [p for p in out.rglob('*') if '.tmp' in p.name]


# -- reuse of Odam-NMS maps only when they are what was asked for ----------
@pytest.fixture(scope='module')
def odam_nms_batch(coco_tiny_root):
    """Tiny FCOS (random weights) with Odam-NMS, one real image: the
    model, a fake runner, the data batch and the test step's outputs
    (which carry ``odam_maps``)."""
    import mmdet_odam  # noqa: F401
    from types import SimpleNamespace
    from mmcv.transforms import Compose
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(TINY))
    cfg.model.bbox_head.type = 'OdamFCOSHead'
    cfg.model.test_cfg.nms = dict(type='odam_nms', iou_threshold=0.5,
                                  corr_low=0.2, corr_high=0.8)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():  # boxes of ~110 px (exp(4) per side), so the
        model.bbox_head.conv_reg.bias.fill_(4.0)  # Gaussian has an effect
    model.cfg = cfg
    model.dataset_meta = dict(classes=('person', ))
    model.eval()
    img = sorted((coco_tiny_root / 'images').glob('*.jpg'))[0]
    data = Compose(cfg.test_pipeline)(dict(img_path=str(img), img_id=0))
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        outputs = model.test_step(batch)
    assert 'odam_maps' in outputs[0].pred_instances
    loader = SimpleNamespace(dataset=SimpleNamespace(metainfo={}),
                             sampler=None)
    runner = SimpleNamespace(model=model, work_dir='.', timestamp='t',
                             test_loop=SimpleNamespace(dataloader=loader))
    return model, runner, batch, outputs


def _run_hook(runner, batch, outputs, out_dir, **kw):
    hook = OdamHook(targets=['cls'], score_thr=0.0, topk=3,
                    out_dir=str(out_dir), save_overlays=False,
                    save_grid=False, map_dtype='float32', **kw)
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, batch, outputs)
    assert hook.num_written == 1 and hook.num_failed == 0
    (npz, ) = out_dir.glob('*.npz')
    with np.load(npz) as z:
        return hook, z['boxes'], z['maps_cls']


@pytest.mark.parametrize('kw', [dict(path='auto'),  # GN head: exact path
                                dict(path='exact'),
                                dict(path='fast', grad_mode='abs'),
                                dict(path='fast', layer='neck'),
                                dict(path='fast', method='gradcam'),
                                dict(path='fast', reuse_odam_maps=False)])
def test_hook_computes_its_own_maps_for_other_options(odam_nms_batch, kw):
    _, runner, batch, outputs = odam_nms_batch
    hook = OdamHook(targets=['cls'], **kw)
    hook.before_test(runner)
    assert not hook._reusable(outputs)
    assert not OdamHook(targets=['cls', 'left'], path='fast')._reusable(
        outputs)


def test_hook_smoothing_none_is_not_replaced_by_odam_nms_maps(
        odam_nms_batch, tmp_path):
    """Same options as Odam-NMS (cls, Gaussian, pos_relu, fast path): its
    maps are written. ``smoothing='none'``: the hook computes the maps, and
    they equal the explainer's with ``smoothing='none'``, not the reused
    Gaussian ones."""
    from mmdet_odam.explainers import build_explainer
    model, runner, batch, outputs = odam_nms_batch
    hook, boxes_g, maps_g = _run_hook(runner, batch, outputs,
                                      tmp_path / 'gauss', path='fast')
    assert hook.num_reused == 1
    pred = outputs[0].pred_instances
    top = pred.scores.argsort(descending=True)[:3]
    ref_g = odam_maps_to_image(pred.odam_maps[top], outputs[0].metainfo)
    np.testing.assert_allclose(maps_g, ref_g.numpy(), atol=1e-6)

    hook, boxes_n, maps_n = _run_hook(runner, batch, outputs,
                                      tmp_path / 'none', path='fast',
                                      smoothing='none')
    assert hook.num_reused == 0
    np.testing.assert_allclose(boxes_n, boxes_g, atol=1e-4)
    explainer = build_explainer(model, 'odam', targets=['cls'],
                                smoothing='none', path='fast')
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    ref_n = explainer.explain(data['inputs'], data['data_samples'],
                              score_thr=0.0, topk=3)[0]
    np.testing.assert_allclose(boxes_n, ref_n.bboxes.numpy(), atol=1e-4)
    np.testing.assert_allclose(maps_n, ref_n.maps['cls'].numpy(), atol=1e-5)
    # the smoothing matters here: the Gaussian maps of the explainer and of
    # Odam-NMS (rendered on its coarser grid) both differ from 'none'
    gauss = build_explainer(model, 'odam', targets=['cls'], path='fast')
    ref_g2 = gauss.explain(data['inputs'], data['data_samples'],
                           score_thr=0.0, topk=3)[0].maps['cls'].numpy()
    def mad(a, b):
        return float(np.abs(a - b).mean())

    assert mad(ref_g2, maps_n) > 0.02 and mad(maps_g, maps_n) > 0.02
    assert mad(maps_g, ref_g2) < 0.01  # reused = the Gaussian maps
