"""End-to-end tests of tools/explain.py on the tiny FCOS config (random
weights, real images from the shared tiny COCO set, a generated video)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'configs' / 'tiny' / 'fcos_tiny_coco-person.py'
TARGETS = ['cls', 'combined']


def _shared_images():
    from mmdet_odam.utils import shared_dir
    d = shared_dir() / 'data' / 'coco_val2017_tiny80' / 'images'
    return sorted(d.glob('*.jpg'))[:2]


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('explain_tool',
                                                  REPO / 'tools' /
                                                  'explain.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    """A checkpoint, an input folder (two real images, one in a sub
    folder, one corrupt file) and a 5-frame video."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    root = tmp_path_factory.mktemp('explain_assets')
    cfg = Config.fromfile(str(TINY))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = root / 'tiny.pth'
    torch.save(
        dict(state_dict=model.state_dict(),
             meta=dict(dataset_meta=dict(classes=('person', ),
                                         palette=[(220, 20, 60)]))), ckpt)
    imgs = root / 'imgs'
    (imgs / 'sub').mkdir(parents=True)
    a, b = _shared_images()
    shutil.copy(a, imgs / 'a.jpg')
    shutil.copy(b, imgs / 'sub' / 'b.png')  # recursive, another extension
    (imgs / 'corrupt.jpg').write_bytes(b'this is not a jpeg')
    frame = cv2.resize(cv2.imread(str(a)), (128, 96))
    video = root / 'clip.mp4'
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 10,
                         (128, 96))
    for i in range(5):
        vw.write(np.roll(frame, 5 * i, axis=1))
    vw.release()
    return dict(ckpt=ckpt, imgs=imgs, video=video, root=root)


def _check_image_outputs(out, stem, img_shape, targets, max_k):
    with np.load(out / f'{stem}.npz') as z:
        k = len(z['boxes'])
        assert 1 <= k <= max_k
        assert z['boxes'].shape == (k, 4) and z['boxes'].dtype == np.float32
        assert z['scores'].shape == (k, ) and z['labels'].shape == (k, )
        assert np.all(np.diff(z['scores']) <= 0)  # highest score first
        for t in targets:
            m = z[f'maps_{t}']
            assert m.shape == (k, ) + tuple(img_shape)
            assert m.dtype in (np.float16, np.float32)
            assert m.min() >= 0 and m.max() <= 1
            assert (m.reshape(k, -1).max(1) > 0).all()
        # combined is the max of the five maps, so it covers cls
        if 'combined' in targets and 'cls' in targets:
            assert np.all(z['maps_combined'].astype(np.float32) >=
                          z['maps_cls'].astype(np.float32) - 1e-3)
    names = sorted(p.name for p in (out / stem).iterdir())
    assert names == sorted(f'det{i}_{t}.jpg' for i in range(k)
                           for t in targets)
    ov = cv2.imread(str(out / stem / f'det0_{targets[0]}.jpg'))
    assert ov.shape[:2] == tuple(img_shape)
    grid = cv2.imread(str(out / f'{stem}_grid.jpg'))
    ch = int(round(img_shape[0] * 256 / img_shape[1]))
    assert grid.shape == (k * ch, len(targets) * 256, 3)
    return k


def test_explain_tool_end_to_end(assets, tmp_path):
    """Folder (recursive) + a corrupt image + a missing file + a video in one
    run: the bad inputs are reported and skipped, everything else is
    written."""
    out = tmp_path / 'out'
    missing = tmp_path / 'missing.jpg'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([
        sys.executable, str(REPO / 'tools' / 'explain.py'), str(TINY),
        str(assets['ckpt']), str(assets['imgs']), str(missing),
        str(assets['video']), '--out-dir', str(out), '--score-thr', '0',
        '--topk', '3', '--video-stride', '2', '--device', 'cpu'
    ], env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # bad inputs: logged with path and reason, nothing written for them
    assert 'skipped' in log and 'corrupt.jpg' in log
    assert 'Cannot read image' in log
    assert str(missing) in log and 'not found' in log
    assert not list(out.glob('corrupt*')) and not list(out.glob('missing*'))
    assert '2 input(s) explained' not in log  # a, sub/b and the video
    assert '3 input(s) explained' in log and '2 failed' in log

    a = cv2.imread(str(assets['imgs'] / 'a.jpg'))
    b = cv2.imread(str(assets['imgs'] / 'sub' / 'b.png'))
    _check_image_outputs(out, 'a', a.shape[:2], TARGETS, 3)
    _check_image_outputs(out, 'sub_b', b.shape[:2], TARGETS, 3)

    # video: frames 0, 2, 4 explained, overlay video of the frame size
    frames = sorted(p.name for p in (out / 'clip_frames').glob('*.npz'))
    assert frames == ['f000000.npz', 'f000002.npz', 'f000004.npz']
    with np.load(out / 'clip_frames' / 'f000002.npz') as z:
        assert z['maps_combined'].shape[1:] == (96, 128)
    cap = cv2.VideoCapture(str(out / 'clip_odam.mp4'))
    n = 0
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        assert fr.shape == (96, 128, 3)
        n += 1
    cap.release()
    assert n == 3

    html = (out / 'index.html').read_text()
    for s in ('a_grid.jpg', 'sub_b_grid.jpg', 'a/det2_combined.jpg',
              'clip_odam.mp4'):
        assert s in html
    assert not [p for p in out.rglob('*') if '.tmp' in p.name]


def test_resume_overwrite_and_all_failed(tool, assets, tmp_path, caplog):
    out = tmp_path / 'out'
    img = str(assets['imgs'] / 'a.jpg')
    base = [str(TINY), str(assets['ckpt']), img, '--out-dir', str(out),
            '--score-thr', '0', '--topk', '2', '--targets', 'cls',
            '--no-overlays']
    assert tool.main(base) == 0
    npz = out / 'a.npz'
    t0 = npz.stat().st_mtime_ns
    assert tool.main(base) == 0  # resume: already done, skipped
    assert npz.stat().st_mtime_ns == t0
    assert tool.main(base + ['--overwrite']) == 0
    assert npz.stat().st_mtime_ns != t0
    assert not (out / 'a').exists()  # --no-overlays
    # every input fails -> exit code 1
    bad = [str(TINY), str(assets['ckpt']), str(tmp_path / 'nope.jpg'),
           str(assets['imgs'] / 'corrupt.jpg'), '--out-dir',
           str(tmp_path / 'out2')]
    assert tool.main(bad) == 1


def test_given_boxes_inline_and_json(tool, assets, tmp_path):
    img = assets['imgs'] / 'a.jpg'
    out = tmp_path / 'out'
    args = [str(TINY), str(assets['ckpt']), str(img), '--out-dir', str(out),
            '--targets', 'cls,left', '--no-overlays']
    assert tool.main(args + ['--boxes', '10,20,200,220', '50,60,90,100']) == 0
    with np.load(out / 'a.npz') as z:
        np.testing.assert_allclose(z['boxes'], [[10, 20, 200, 220],
                                                [50, 60, 90, 100]])
        assert z['maps_left'].shape[0] == 2
    # JSON keyed by file name, with labels; a box outside the image fails
    # that input (the only one -> exit 1)
    spec = tmp_path / 'boxes.json'
    spec.write_text(json.dumps({'a.jpg': [[5, 5, 100, 100, 0]]}))
    assert tool.main(args + ['--boxes', str(spec), '--overwrite']) == 0
    with np.load(out / 'a.npz') as z:
        np.testing.assert_allclose(z['boxes'], [[5, 5, 100, 100]])
        assert z['labels'].tolist() == [0]
    assert tool.main(args + ['--boxes', '0,0,5000,10', '--overwrite']) == 1


@pytest.mark.parametrize('extra,msg', [
    (['--targets', 'cls,size'], 'valid names: cls'),
    (['--score-thr', '1.5'], 'score-thr'),
    (['--boxes', '1,2,3'], 'bad box'),
    (['--boxes', '1,2,3,4,0', '5,6,7,8'], 'label for every box'),
    (['--grad-mode', 'up'], 'grad_mode'),
    (['--layer', 'backbone.nope'], 'valid names'),
    (['--method', 'lime'], 'Unknown explanation method'),
])
def test_usage_errors_exit_2(tool, assets, tmp_path, capsys, extra, msg):
    with pytest.raises(SystemExit) as e:
        tool.main([str(TINY), str(assets['ckpt']), 'x.jpg', '--out-dir',
                   str(tmp_path)] + extra)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_collect_inputs_stems(tool, tmp_path):
    (tmp_path / 'd' / 's').mkdir(parents=True)
    for p in ('d/x.jpg', 'd/s/x.jpg', 'd/notes.txt', 'x.jpg'):
        (tmp_path / p).write_bytes(b'')
    tasks = tool.collect_inputs([str(tmp_path / 'd'), str(tmp_path / 'x.jpg'),
                                 str(tmp_path / 'v.MP4')])
    assert [(k, s) for k, _, s in tasks] == [('image', 's_x'),
                                             ('image', 'x'),
                                             ('image', 'x_2'),
                                             ('video', 'v')]
