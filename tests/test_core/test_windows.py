"""Per-row windows of level maps and ODAM maps from them."""
import torch

from mmdet_odam.core import gaussian_smooth, odam_raw
from mmdet_odam.core.windows import Windows, gather_windows, windowed_odam_raw


def test_dense_and_add_to_place_each_row_window():
    vals = torch.arange(2 * 1 * 2 * 2, dtype=torch.float64).reshape(2, 1, 2,
                                                                    2) + 1
    win = Windows(img=torch.tensor([1, 0]), y0=torch.tensor([0, 2]),
                  x0=torch.tensor([1, 0]), values=vals, shape=(2, 1, 4, 3),
                  rows=torch.tensor([2, 0]))
    dense = win.dense(3)
    assert dense.shape == (3, 2, 1, 4, 3)
    assert torch.equal(dense[2, 1, 0, 0:2, 1:3], vals[0, 0])
    assert torch.equal(dense[0, 0, 0, 2:4, 0:2], vals[1, 0])
    assert dense.sum() == vals.sum() and dense[1].abs().sum() == 0
    win.add_to(dense)  # adds, does not overwrite
    assert torch.equal(dense[2, 1, 0, 0:2, 1:3], 2 * vals[0, 0])
    back = gather_windows(dense[[2, 0]].sum(0), win.img, win.y0, win.x0,
                          (2, 2))
    assert torch.equal(back, 2 * vals)


def test_windowed_odam_equals_the_dense_map():
    """Smoothing (zero-padded, one sigma per row, some below 0.5), the
    channel sum and the paste, windows at the borders of two images."""
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 5, 10, 13, generator=g, dtype=torch.float64)
    win = Windows(img=torch.tensor([0, 1, 1]), y0=torch.tensor([0, 6, 3]),
                  x0=torch.tensor([9, 0, 5]),
                  values=torch.randn(3, 5, 4, 4, generator=g,
                                     dtype=torch.float64),
                  shape=(2, 5, 10, 13))
    dense = win.dense(3)[torch.arange(3), win.img]  # (3, C, H, W)
    for sigmas in (None, torch.tensor([0.0, 1.3, 2.0])):
        want = odam_raw(dense if sigmas is None else
                        gaussian_smooth(dense, sigmas), feat[win.img])
        got = windowed_odam_raw(win, feat, sigmas)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
