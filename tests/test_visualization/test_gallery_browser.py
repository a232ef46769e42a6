"""The gallery written by tools/explain.py, opened from file:// in headless
Chromium (Debian's ``chromium``; installed with apt-get when missing): a
real click on a detection shows that detection's maps for every target,
the target toggles and the opacity slider change what is shown (checked on
the pixels of a screenshot), a URL fragment selects a view, and thumbnails
far below the viewport are not loaded."""
import importlib.util
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from chromium_driver import Browser, install_chromium

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'configs' / 'tiny' / 'fcos_tiny_coco-person.py'
TARGETS = ['cls', 'left']
NUM_DETS = 3

VIEWER_STATE = """(() => {
  const v = document.getElementById('viewer');
  if (v.hidden) return null;
  const imgs = [...v.querySelectorAll('img')];
  if (!imgs.every(i => i.complete && i.naturalWidth > 0)) return null;
  return {img: v.dataset.img, det: v.dataset.det, hash: location.hash,
          heat: [...v.querySelectorAll('img.heat')].map(
            i => [i.dataset.target, i.getAttribute('src'), i.style.opacity])};
})()"""


@pytest.fixture(scope='session')
def chromium_exe():
    """Chromium, installed when missing; fails (never skips) without it."""
    try:
        return install_chromium()
    except RuntimeError as e:
        pytest.fail(f'headless Chromium is needed for the gallery test and '
                    f'could not be installed: {e}')


@pytest.fixture(scope='module')
def gallery(tmp_path_factory, coco_tiny_root):
    """tools/explain.py on two real images (tiny FCOS, random weights), the
    top 3 detections, targets cls and left."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    root = tmp_path_factory.mktemp('gallery')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(TINY)).model)
    model.init_weights()
    ckpt = root / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=('person', )))), ckpt)
    imgs = root / 'imgs'
    imgs.mkdir()
    for name, src in zip('ab', sorted((coco_tiny_root / 'images').glob(
            '*.jpg'))[:2]):
        shutil.copy(src, imgs / f'{name}.jpg')
    spec = importlib.util.spec_from_file_location(
        'explain_tool', REPO / 'tools' / 'explain.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = root / 'out'
    assert tool.main([str(TINY), str(ckpt), str(imgs), '--out-dir', str(out),
                      '--targets', *TARGETS, '--score-thr', '0', '--topk',
                      str(NUM_DETS), '--device', 'cpu', '--no-overlays']) == 0
    return out


@pytest.fixture(scope='module')
def browser(chromium_exe, tmp_path_factory):
    b = Browser(chromium_exe, str(tmp_path_factory.mktemp('profile')),
                width=1200, height=1400)
    yield b
    b.close()


def _center(b, selector):
    """Scroll the element into view; its centre in viewport pixels."""
    return b.js(f"""(() => {{
      const e = document.querySelector({selector!r});
      e.scrollIntoView({{block: 'center'}});
      const r = e.getBoundingClientRect();
      return [r.x + r.width / 2, r.y + r.height / 2];
    }})()""")


def _shot_of(b, selector, path):
    """Screenshot (saved to ``path``) cropped to the element (BGR)."""
    x, y, w, h = b.js(f"""(() => {{
      const e = document.querySelector({selector!r});
      e.scrollIntoView({{block: 'center'}});
      const r = e.getBoundingClientRect();
      return [r.x, r.y, r.width, r.height].map(Math.round);
    }})()""")
    png = b.screenshot()
    path.write_bytes(png)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return shot[y:y + h, x:x + w]


def _diff(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_click_shows_the_maps_of_that_detection(gallery, browser, tmp_path):
    b, stem, k = browser, 'a', 2
    b.goto((gallery / 'index.html').as_uri())
    assert b.js('document.body.dataset.ready') == '1'
    assert b.js("document.getElementById('viewer').hidden")
    assert b.js("document.querySelectorAll('img.heat').length") == 0
    assert b.js("[...document.querySelectorAll('img.thumb')].every("
                "i => i.loading === 'lazy' && i.decoding === 'async')")

    b.click(*_center(b, f'.items a.det[data-img="{stem}"][data-det="{k}"]'))
    state = b.wait_js(VIEWER_STATE)
    assert (state['img'], state['det']) == (stem, str(k))
    assert [h[:2] for h in state['heat']] == [
        [t, f'{stem}/map{k}_{t}.jpg'] for t in TARGETS]
    # the shown files are this detection's maps in the npz
    with np.load(gallery / f'{stem}.npz') as z:
        assert len(z['boxes']) == NUM_DETS
        maps = {t: z[f'maps_{t}'].astype(np.float32) for t in TARGETS}
    from mmdet_odam.visualization import colorize
    for t in TARGETS:
        assert maps[t][k].max() > 0, f'the {t} map of detection {k} is empty'
        got = cv2.imread(str(gallery / stem / f'map{k}_{t}.jpg'))
        assert _diff(got, colorize(maps[t][k])) < 3.0

    # toggle cls off (a real click): only the left panel stays
    b.click(*_center(b, '#viewer input.target[value="cls"]'))
    state = b.wait_js(VIEWER_STATE)
    assert [h[0] for h in state['heat']] == ['left']
    assert 'targets=left' in state['hash']

    # opacity 1: the panel shows the map itself; 0: the image itself
    panel = '#viewer .panel[data-target="left"] .stage'
    shots = {}
    for alpha in ('1', '0'):
        b.js("(() => { const r = document.getElementById('opacity');"
             f" r.value = {alpha}; r.dispatchEvent(new Event('input')); }})()")
        assert b.wait_js(VIEWER_STATE)['heat'][0][2] == alpha
        shots[alpha] = _shot_of(b, panel, tmp_path / f'opacity{alpha}.png')
    heat = cv2.imread(str(gallery / stem / f'map{k}_left.jpg'))
    other = cv2.imread(str(gallery / stem / 'map0_left.jpg'))
    image = cv2.imread(str(gallery / stem / 'image.jpg'))
    assert shots['1'].shape == heat.shape  # full size, not a thumbnail
    d_map = _diff(shots['1'], heat)  # (+ the 2 px box lines)
    assert d_map < 6.0, d_map
    assert d_map < 0.5 * _diff(shots['1'], other)  # not another detection
    assert _diff(shots['0'], image) < 6.0
    assert _diff(shots['1'], image) > 30.0
    b.js("(() => { const r = document.getElementById('opacity');"
         " r.value = 0.5; r.dispatchEvent(new Event('input')); })()")
    (tmp_path / 'gallery.png').write_bytes(b.screenshot())
    assert (tmp_path / 'gallery.png').stat().st_size > 10000


def test_url_fragment_selects_a_view(gallery, browser):
    """A bookmarked view: image, detection, targets and opacity from the
    URL fragment (what ``chromium --dump-dom URL#...`` sees too)."""
    b = browser
    b.goto((gallery / 'index.html').as_uri() +
           '#img=b&det=1&targets=left&opacity=0.3')
    state = b.wait_js(VIEWER_STATE)
    assert (state['img'], state['det']) == ('b', '1')
    assert state['heat'] == [['left', 'b/map1_left.jpg', '0.3']]
    assert b.js("document.querySelector('#viewer a.det.active')"
                ".dataset.det") == '1'
    assert b.js("[...document.querySelectorAll('#viewer input.target')]"
                ".map(c => [c.value, c.checked])") == [['cls', False],
                                                       ['left', True]]


def test_many_images_load_lazily(gallery, browser, tmp_path):
    """200 results (links to one): only the thumbnails near the viewport
    are fetched, no full image or map before a click."""
    many = tmp_path / 'many'
    many.mkdir()
    for i in range(200):
        os.symlink(gallery / 'a.npz', many / f'img{i:03d}.npz')
        os.symlink(gallery / 'a', many / f'img{i:03d}')
    from mmdet_odam.visualization import write_gallery
    write_gallery(many)
    b = browser
    b.goto((many / 'index.html').as_uri())
    loaded = b.wait_js("""(() => {
      const t = [...document.querySelectorAll('img.thumb')];
      if (!t[0].complete) return null;
      return t.map(i => i.complete && i.naturalWidth > 0);
    })()""")
    assert len(loaded) == 200 and loaded[0]
    assert sum(loaded) < 100, sum(loaded)  # the rest is deferred
    assert b.js("document.querySelectorAll('#viewer img').length") == 0
