import json
import os

import cv2
import numpy as np
import pytest
import torch

from mmdet_odam.explainers.results import Explanation
from mmdet_odam.visualization import (ExplanationWriter, VideoOverlayWriter,
                                      atomic_path, colorize, gallery_entries,
                                      iter_video_frames, safe_stem,
                                      write_gallery)


def _expl(k=2, h=40, w=50, targets=('cls', 'combined')):
    g = torch.Generator().manual_seed(0)
    return Explanation(
        bboxes=torch.tensor([[2., 3., 20., 30.]] * k),
        scores=torch.linspace(0.9, 0.5, k),
        labels=torch.zeros(k, dtype=torch.long),
        candidate_inds=torch.arange(k),
        maps={t: torch.rand(k, h, w, generator=g) for t in targets},
        img_path='a.jpg', ori_shape=(h, w), method='odam', layer='fpn_level')


def test_writer_files_and_npz(tmp_path):
    img = np.full((40, 50, 3), 128, np.uint8)
    wr = ExplanationWriter(tmp_path, class_names=['person'], cell_width=25)
    e = _expl()
    assert not wr.is_done('a')
    wr.write('a', img, e)
    assert wr.is_done('a')
    names = sorted(os.listdir(tmp_path / 'a'))
    assert names == ['det0_cls.jpg', 'det0_combined.jpg', 'det1_cls.jpg',
                     'det1_combined.jpg', 'image.jpg', 'map0_cls.jpg',
                     'map0_combined.jpg', 'map1_cls.jpg', 'map1_combined.jpg',
                     'thumb.jpg']
    assert cv2.imread(str(tmp_path / 'a' / 'det1_cls.jpg')).shape == (40, 50,
                                                                      3)
    assert cv2.imread(str(tmp_path / 'a_grid.jpg')).shape == (2 * 20, 2 * 25,
                                                              3)
    with np.load(tmp_path / 'a.npz') as z:
        assert z['boxes'].dtype == np.float32 and z['boxes'].shape == (2, 4)
        assert z['maps_cls'].dtype == np.float16
        assert z['maps_combined'].shape == (2, 40, 50)
        np.testing.assert_allclose(z['maps_cls'], e.maps['cls'].numpy(),
                                   atol=1e-3)
        assert list(z['targets']) == ['cls', 'combined']
        assert str(z['img_path']) == 'a.jpg'
        assert list(z['label_names']) == ['person', 'person']
    # no temporary files are left behind
    assert not [p for p in tmp_path.rglob('*') if '.tmp' in p.name]
    # overwrite with fewer detections removes stale overlays and maps
    wr.write('a', img, _expl(k=1))
    assert sorted(os.listdir(tmp_path / 'a')) == [
        'det0_cls.jpg', 'det0_combined.jpg', 'image.jpg', 'map0_cls.jpg',
        'map0_combined.jpg', 'thumb.jpg']
    ExplanationWriter(tmp_path, save_gallery=False).write('a', img,
                                                          _expl(k=1))
    assert sorted(os.listdir(tmp_path / 'a')) == ['det0_cls.jpg',
                                                   'det0_combined.jpg']


def test_gallery_files_are_the_maps(tmp_path):
    """map<k>_<t>.jpg is the colour-mapped map of detection k alone (JPEG
    error only), image.jpg the image; the thumbnail is 320 px wide with the
    boxes drawn."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (400, 640, 3), dtype=np.uint8)
    e = _expl(k=2, h=400, w=640)
    e.maps = {t: torch.nn.functional.interpolate(  # smooth, as real maps
        m[:, None, ::40, ::40], size=(400, 640), mode='bilinear')[:, 0]
        for t, m in e.maps.items()}
    ExplanationWriter(tmp_path, save_overlays=False,
                      save_grid=False).write('a', img, e)
    for k in range(2):
        got = cv2.imread(str(tmp_path / 'a' / f'map{k}_cls.jpg'))
        ref = colorize(e.maps['cls'][k].numpy().astype(np.float16))
        other = colorize(e.maps['cls'][1 - k].numpy())
        err = np.abs(got.astype(int) - ref).mean()
        assert err < 3 < np.abs(got.astype(int) - other).mean()
    base = cv2.imread(str(tmp_path / 'a' / 'image.jpg'))
    assert base.shape == img.shape
    thumb = cv2.imread(str(tmp_path / 'a' / 'thumb.jpg'))
    assert thumb.shape == (200, 320, 3)


def test_writer_rejects_maps_of_wrong_size(tmp_path):
    with pytest.raises(ValueError, match=r'maps_cls.*\(2, 41, 50\)'):
        ExplanationWriter(tmp_path).write('x', np.zeros((41, 50, 3),
                                                        np.uint8), _expl())
    assert not (tmp_path / 'x.npz').exists()


def test_writer_empty_explanation(tmp_path):
    e = Explanation.empty(['cls'], (40, 50))
    ExplanationWriter(tmp_path).write('e', np.zeros((40, 50, 3), np.uint8), e)
    with np.load(tmp_path / 'e.npz') as z:
        assert z['boxes'].shape == (0, 4) and z['maps_cls'].shape == (0, 40,
                                                                      50)
    assert (tmp_path / 'e_grid.jpg').is_file()


def test_atomic_path_removes_temp_on_error(tmp_path):
    target = tmp_path / 'out.bin'
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, 'wb').write(b'half')
            raise RuntimeError('killed')
    assert list(tmp_path.iterdir()) == []


def test_safe_stem():
    assert safe_stem('a b/c?.d') == 'a_b_c_.d'
    assert safe_stem('...') == 'image'


def test_gallery_lists_images_and_videos(tmp_path):
    img = np.full((40, 50, 3), 128, np.uint8)
    wr = ExplanationWriter(tmp_path)
    wr.write('b', img, _expl(k=1))
    wr.write('a', img, _expl(k=2))
    (tmp_path / 'clip_odam.mp4').write_bytes(b'x')
    write_gallery(tmp_path)
    ents = gallery_entries(tmp_path)
    assert [(e['stem'], e['kind']) for e in ents] == [('a', 'image'),
                                                       ('b', 'image'),
                                                       ('clip', 'video')]
    assert ents[0]['num_dets'] == 2 and ents[0]['grid'] == 'a_grid.jpg'
    assert len(ents[0]['overlays']) == 4
    assert ents[0]['interactive'] and ents[0]['dets']['shape'] == [40, 50]
    text = (tmp_path / 'index.html').read_text()
    for s in ('a_grid.jpg', 'a/thumb.jpg', 'b.npz', 'clip_odam.mp4',
              'data-img="a" data-det="1"', 'loading="lazy"'):
        assert s in text
    assert 'http' not in text and '<link' not in text  # all inline
    data = json.loads(text.split('type="application/json">')[1].split(
        '</script>')[0])
    assert [d['stem'] for d in data] == ['a', 'b']
    assert data[0]['map'] == 'a/map{k}_{t}.jpg'
    assert data[0]['targets'] == ['cls', 'combined']
    assert [d['name'] for d in data[0]['dets']] == ['class 0', 'class 0']
    assert data[0]['dets'][0]['box'] == [2, 3, 20, 30]
    # written without the gallery files: the static overlays are shown
    ExplanationWriter(tmp_path, save_gallery=False).write('b', img,
                                                          _expl(k=1))
    write_gallery(tmp_path)
    text = (tmp_path / 'index.html').read_text()
    assert 'b/det0_cls.jpg' in text and 'b/thumb.jpg' not in text


def test_video_writer_roundtrip(tmp_path):
    path = tmp_path / 'v_odam.mp4'
    with VideoOverlayWriter(path, fps=5) as vw:
        for i in range(4):
            vw.write(np.full((32, 48, 3), 60 * i, np.uint8))
        assert not path.exists()  # only after close
    assert path.is_file() and vw.num_frames == 4
    frames = list(iter_video_frames(path, stride=2))
    assert [i for i, _ in frames] == [0, 2]
    assert frames[0][1].shape == (32, 48, 3)


def test_video_writer_error_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with VideoOverlayWriter(tmp_path / 'v.mp4') as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
            raise ValueError('boom')
    assert list(tmp_path.iterdir()) == []


def test_video_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.mp4'):
        list(iter_video_frames(tmp_path / 'missing.mp4'))
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'not a video')
    with pytest.raises(IOError, match='bad.mp4'):
        list(iter_video_frames(bad))
