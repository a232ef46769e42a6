import cv2
import numpy as np
import pytest
import torch

from mmdet_odam.visualization import (blend_map, cell_size, colorize,
                                      draw_box, frame_overlay, make_grid,
                                      overlay_detection)


def _img(h=60, w=90):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = 100
    return img


def test_colorize_jet_endpoints():
    m = np.array([[0.0, 1.0]], np.float32)
    c = colorize(m)
    assert c.shape == (1, 2, 3) and c.dtype == np.uint8
    # JET: 0 -> dark blue, 1 -> dark red (BGR)
    assert c[0, 0, 0] > 100 and c[0, 0, 2] == 0
    assert c[0, 1, 2] > 100 and c[0, 1, 0] == 0


def test_blend_alpha_and_out_of_range():
    img = _img()
    hm = torch.zeros(60, 90)
    hm[10:20, 30:40] = 1.0
    out0 = blend_map(img, hm, alpha=0.0)
    assert np.array_equal(out0, img)
    out = blend_map(img, hm, alpha=1.0)
    assert np.array_equal(out, colorize(hm.numpy()))
    # a map at another resolution is resized onto the image
    assert blend_map(img, np.ones((6, 9)), 0.5).shape == img.shape
    with pytest.raises(ValueError, match='alpha'):
        blend_map(img, hm, alpha=1.5)
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        blend_map(img, np.zeros((2, 60, 90)))


def test_overlay_size_box_and_heat_location():
    img = _img()
    hm = np.zeros((60, 90), np.float32)
    hm[40:50, 70:80] = 1.0  # hot corner
    out = overlay_detection(img, hm, [5, 5, 30, 30], 0, 0.87, ['person'],
                            color=(255, 0, 255))
    assert out.shape == img.shape and out.dtype == np.uint8
    # heat (red in JET) where the map is 1, blue/cold elsewhere
    assert out[45, 75, 2] > out[45, 75, 0]
    assert out[55, 10, 0] > out[55, 10, 2]
    # the box edge has the box colour (magenta)
    assert tuple(out[15, 5]) == (255, 0, 255)
    # input untouched
    assert img[15, 5, 0] == 0


def test_draw_box_clips_outside_image():
    out = draw_box(_img(), [-50, -50, 500, 500], (0, 0, 255), 'x 1.00')
    assert out.shape == (60, 90, 3)


@pytest.mark.parametrize('k,targets,max_rows', [(3, ['cls', 'combined'], None),
                                                (5, ['cls'], 2),
                                                (2, ['cls', 'left', 'top',
                                                     'right', 'bottom',
                                                     'combined'], 10)])
def test_grid_layout_rows_dets_cols_targets(k, targets, max_rows):
    img = _img(60, 90)
    boxes = torch.tensor([[5., 5., 40., 40.]]).repeat(k, 1)
    maps = {t: torch.rand(k, 60, 90) for t in targets}
    scores = torch.linspace(1, 0.5, k)
    grid = make_grid(img, boxes, scores,
                     torch.zeros(k, dtype=torch.long), maps, targets,
                     ['person'], cell_width=45, max_rows=max_rows)
    ch, cw = cell_size((60, 90), 45)
    assert (ch, cw) == (30, 45)
    rows = k if max_rows is None else min(k, max_rows)
    assert grid.shape == (rows * ch, len(targets) * cw, 3)
    # cell (i, j) is the overlay of detection i for target j
    i, j = rows - 1, len(targets) - 1
    ov = overlay_detection(img, maps[targets[j]][i], boxes[i], 0,
                           float(scores[i]),
                           ['person'])
    ref = cv2.resize(ov, (cw, ch), interpolation=cv2.INTER_AREA)
    cell = grid[i * ch:(i + 1) * ch, j * cw:(j + 1) * cw]
    # top half of the cell (the label is written bottom-left) matches
    assert np.abs(cell[:10].astype(int) - ref[:10].astype(int)).max() <= 1


def test_grid_without_detections_is_one_cell():
    grid = make_grid(_img(60, 90), torch.zeros(0, 4), torch.zeros(0),
                     torch.zeros(0, dtype=torch.long),
                     {'cls': torch.zeros(0, 60, 90)}, cell_width=45)
    assert grid.shape == (30, 45, 3)


def test_grid_unknown_target_names_it():
    with pytest.raises(KeyError, match='left'):
        make_grid(_img(), torch.zeros(1, 4), torch.ones(1),
                  torch.zeros(1, dtype=torch.long),
                  {'cls': torch.zeros(1, 60, 90)}, ['left'])


def test_frame_overlay_merges_maps():
    img = _img()
    maps = torch.zeros(2, 60, 90)
    maps[0, 0:10, 0:10] = 1
    maps[1, 50:60, 80:90] = 1
    out = frame_overlay(img, torch.tensor([[20., 20, 30, 30]] * 2),
                        torch.ones(2), torch.zeros(2, dtype=torch.long), maps)
    assert out.shape == img.shape
    assert out[5, 5, 2] > out[5, 5, 0] and out[55, 85, 2] > out[55, 85, 0]
    assert out[30, 60, 0] > out[30, 60, 2]
