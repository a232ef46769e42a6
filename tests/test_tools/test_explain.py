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
    assert names == sorted([f'{kind}{i}_{t}.jpg' for i in range(k)
                            for t in targets for kind in ('det', 'map')] +
                           ['image.jpg', 'thumb.jpg'])
    ov = cv2.imread(str(out / stem / f'det0_{targets[0]}.jpg'))
    assert ov.shape[:2] == tuple(img_shape)
    assert cv2.imread(str(out / stem / 'image.jpg')).shape[:2] == \
        tuple(img_shape)
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
    for s in ('a_grid.jpg', 'sub_b_grid.jpg', 'a/thumb.jpg',
              'data-img="sub_b" data-det="2"', 'clip_odam.mp4'):
        assert s in html
    assert not [p for p in out.rglob('*') if '.tmp' in p.name]


def test_resume_overwrite_and_all_failed(tool, assets, tmp_path, caplog):
    out = tmp_path / 'out'
    img = str(assets['imgs'] / 'a.jpg')
    base = [str(TINY), str(assets['ckpt']), img, '--out-dir', str(out),
            '--score-thr', '0', '--topk', '2', '--targets', 'cls',
            '--no-overlays', '--no-gallery']
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
            '--targets', 'cls,left', '--no-overlays', '--no-gallery']
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
    (['--path', 'quick'], "invalid choice: 'quick'"),
    (['--path', 'fast', '--exact', 'yes'], 'disagree'),
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


def test_list_options_space_or_comma(tool):
    assert tool.split_list(['cls', 'left']) == ['cls', 'left']
    assert tool.split_list(['cls,left', 'top,']) == ['cls', 'left', 'top']
    for spelling in (['cls', 'left'], ['cls,left'], ['cls,', 'left']):
        parser, args = tool.parse_args(['c.py', 'k.pth', 'x.jpg', '--out-dir',
                                        'o', '--targets'] + spelling)
        args.config, args.checkpoint = str(TINY), str(TINY)  # files exist
        tool.check_args(parser, args)
        assert args.target_list == ['cls', 'left']


@pytest.mark.parametrize('extra,path', [([], 'auto'), (['--path', 'exact'],
                                                      'exact'),
                                        (['--exact', 'no'], 'fast'),
                                        (['--exact', 'auto'], 'auto')])
def test_path_option_and_its_older_spelling(tool, extra, path):
    parser, args = tool.parse_args([str(TINY), str(TINY), 'x.jpg',
                                    '--out-dir', 'o'] + extra)
    tool.check_args(parser, args)
    assert args.path == path
    assert tool.exact_kwargs(args) == dict(path=path)
    assert '--exact' not in parser.format_help()  # hidden alias


def test_space_separated_targets_end_to_end(tool, assets, tmp_path):
    """``--targets cls left`` and ``--path fast``: both maps written, equal
    to what the API gives with the same options."""
    from mmdet_odam.apis import explain_image, init_explainer
    img = str(assets['imgs'] / 'a.jpg')
    out = tmp_path / 'out'
    assert tool.main([str(TINY), str(assets['ckpt']), img, '--out-dir',
                      str(out), '--targets', 'cls', 'left', '--path', 'fast',
                      '--topk', '2', '--score-thr', '0', '--no-overlays',
                      '--map-dtype', 'float32', '--device', 'cpu']) == 0
    model = init_explainer(str(TINY), str(assets['ckpt']), device='cpu')
    ref = explain_image(model, img, targets=['cls', 'left'], topk=2,
                        score_thr=0, path='fast')
    with np.load(out / 'a.npz') as z:
        assert list(z['targets']) == ['cls', 'left']
        for t in ('cls', 'left'):
            np.testing.assert_allclose(z[f'maps_{t}'], ref.maps[t].numpy(),
                                       atol=1e-5)


def _log_of(tool, fn):
    """Everything ``fn()`` logs to the tool's logger."""
    import io
    import logging
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = tool.get_logger()
    logger.addHandler(handler)
    try:
        rc = fn()
    finally:
        logger.removeHandler(handler)
    return rc, buf.getvalue()


def test_quiet_many_inputs_progress_and_summary(tool, assets, tmp_path,
                                                capsys):
    """More than QUIET_ABOVE inputs -> a progress bar, no per-input log
    lines, one summary, the failures in failed.txt."""
    out = tmp_path / 'out'
    img = str(assets['imgs'] / 'a.jpg')
    common = [str(TINY), str(assets['ckpt']), '--out-dir', str(out),
              '--targets', 'cls', '--topk', '1', '--no-overlays',
              '--no-gallery']
    missing = [str(tmp_path / f'nope{i}.jpg') for i in range(3)]
    inputs = [img] * (tool.QUIET_ABOVE - 1) + missing
    capsys.readouterr()
    rc, log = _log_of(tool, lambda: tool.main(common[:2] + inputs +
                                              common[2:]))
    assert rc == 0
    assert f'{len(inputs)}/{len(inputs)}' in capsys.readouterr().out
    assert 'skipped ' not in log and 'nope0.jpg' not in log
    assert '9 input(s) explained' in log and '3 failed' in log
    assert 'failed.txt' in log
    lines = (out / 'failed.txt').read_text().splitlines()
    assert [ln.split('\t')[0] for ln in lines] == missing
    assert all('not found' in ln for ln in lines)
    # --verbose logs every failure as it happens; the old list is removed
    rc, log = _log_of(tool, lambda: tool.main(common[:2] + inputs +
                                              common[2:] + ['-v']))
    assert rc == 0 and '9 already done' in log
    assert all(f'skipped {m}' in log for m in missing)
    assert not (out / 'failed.txt').exists()


def test_show_path_prints_explain_support(tool, assets, capfd):
    """``--show-path`` prints ``str(explain_support(model, targets))``."""
    from mmdet_odam import apis
    from mmdet_odam.apis import init_explainer
    assert tool.main([str(TINY), str(assets['ckpt']), '--show-path',
                      '--targets', 'cls', 'left', '--device', 'cpu']) == 0
    printed = capfd.readouterr().out
    model = init_explainer(str(TINY), str(assets['ckpt']), device='cpu')
    expected = str(apis.explain_support(model, targets=['cls', 'left']))
    assert expected.strip() and expected.strip() in printed
