"""Pure ODAM tensor functions: hand-computed values on tiny inputs."""
import math

import pytest
import torch

from mmdet_odam.core import (apply_grad_mode, box_sigmas, gather_patches,
                             gaussian_kernels1d, gaussian_smooth,
                             kernel_radius, level_to_image, level_to_padded,
                             minmax_normalize, odam_map, paste_patches)


def test_odam_map_grad_modes():
    g = torch.tensor([[[[1.0, -2.0]], [[0.5, 1.0]]]])  # (1, 2, 1, 2)
    a = torch.tensor([[[[2.0, 1.0]], [[2.0, 1.0]]]])
    # raw = [1*2 + .5*2, -2*1 + 1*1] = [3, -1]
    assert odam_map(g, a).tolist() == [[[3.0, 0.0]]]
    assert odam_map(g, a, 'neg_relu').tolist() == [[[0.0, 1.0]]]
    assert odam_map(g, a, 'pos_norelu').tolist() == [[[3.0, -1.0]]]
    assert odam_map(g, a, 'abs').tolist() == [[[3.0, 1.0]]]
    with pytest.raises(ValueError, match='pos_relu, neg_relu'):
        apply_grad_mode(torch.zeros(1), 'max')


def test_box_sigma_rule_and_kernel():
    # 20 x 5 cells -> sigma = 0.1 * sqrt(100) = 1.0; 2 x 2 -> 0.2 -> off;
    # 100 x 100 -> 10 clamped to 2
    s = box_sigmas(torch.tensor([[20.0, 5.0], [2.0, 2.0], [100.0, 100.0]]))
    assert torch.allclose(s, torch.tensor([1.0, 0.0, 2.0]))
    assert [kernel_radius(v) for v in s.tolist()] == [2, 0, 4]
    k = gaussian_kernels1d(torch.tensor([1.0, 0.0]))
    assert k.shape == (2, 5)
    e = [math.exp(-0.5 * x * x) for x in (-2, -1, 0, 1, 2)]
    ref = torch.tensor([v / sum(e) for v in e])
    assert torch.allclose(k[0], ref)
    assert k[1].tolist() == [0, 0, 1, 0, 0]


def test_gaussian_smooth_hand_computed():
    x = torch.zeros(2, 1, 7, 7)
    x[:, 0, 3, 3] = 1.0
    x[1, 0, 0, 0] = 2.0  # identity for sample 1 (sigma 0)
    y = gaussian_smooth(x, torch.tensor([1.0, 0.0]))
    e = torch.tensor([math.exp(-0.5 * v * v) for v in (-2, -1, 0, 1, 2)])
    e = e / e.sum()
    assert torch.allclose(y[0, 0, 1:6, 1:6], e[:, None] * e[None, :])
    assert y[0, 0, 0].abs().sum() == 0  # truncated at 2 sigma
    assert torch.equal(y[1], x[1])
    # mass is kept away from the border
    assert torch.isclose(y[0].sum(), torch.tensor(1.0))


def test_level_to_image_undoes_padding_and_resize():
    """One hot cell (j, i) of a stride-8 level lands on original pixels
    ((i + .5) * 8 / scale, (j + .5) * 8 / scale)."""
    # original 60 x 100 resized by 0.8 to 48 x 80, padded to 64 x 96
    lvl = torch.zeros(1, 8, 12)
    lvl[0, 5, 9] = 1.0  # cell centre in input pixels (76, 44)
    out = level_to_image(lvl, 8, img_shape=(48, 80), ori_shape=(60, 100),
                         scale_factor=(0.8, 0.8))
    assert out.shape == (1, 60, 100)
    yy, xx = divmod(int(out[0].argmax()), 100)
    assert abs((yy + 0.5) - 44 / 0.8) <= 0.5 and \
        abs((xx + 0.5) - 76 / 0.8) <= 0.5
    # bilinear weight falls to 0 one cell (10 original px) away
    assert out[0, int(44 / 0.8), int(76 / 0.8) - 11] == 0
    # a cell in the padding is never visible in the original image
    pad = torch.zeros(1, 8, 12)
    pad[0, 7, 11] = 1.0  # input pixels (92, 60) > img_shape
    assert level_to_image(pad, 8, (48, 80), (60, 100)).max() == 0


def test_level_to_padded_identity_at_cell_resolution():
    lvl = torch.rand(2, 4, 6)
    out = level_to_padded(lvl, 16, pad_shape=(64, 96), out_size=(4, 6))
    assert torch.allclose(out, lvl, atol=1e-6)


def test_gather_and_paste_roundtrip():
    feat = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    centers = torch.tensor([[0, 0], [3, 4]])
    p, mask = gather_patches(feat, torch.tensor([0, 1]), centers, 1)
    assert p.shape == (2, 1, 3, 3)
    assert p[0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 5, 6]]
    assert mask[0, 0].tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert p[1, 0, 1, 1] == feat[1, 0, 3, 4]
    back = paste_patches(p[:, 0], centers, (4, 5))
    assert back[0, 0, 0] == 0 and back[0, 1, 1] == 6
    assert back[1, 3, 4] == feat[1, 0, 3, 4] and back[1, 0, 0] == 0


def test_minmax_normalize_safe():
    m = torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]], [[2.0, 2.0]]])
    out = minmax_normalize(m)
    assert out.tolist() == [[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]
    assert minmax_normalize(torch.zeros(0, 3, 3)).shape == (0, 3, 3)


def test_render_local_equals_full_render_and_normalize():
    from mmdet_odam.core import render_local, sample_level_maps
    torch.manual_seed(0)
    m = torch.zeros(4, 12, 16, dtype=torch.float64)
    m[0, 3:6, 4:9] = torch.rand(3, 5)
    m[1, 0:2, 0:3] = torch.rand(2, 3) - 0.7  # signed (pos_norelu)
    m[3, 10:12, 13:16] = torch.rand(2, 3)
    m2 = torch.rand(2, 3, 4, dtype=torch.float64) - 0.3
    pieces = [(torch.tensor([0, 1, 2, 3]), 8, m),
              (torch.tensor([1, 3]), (32, 32), m2)]
    full = sample_level_maps(m, 8, (70, 130), (1.25, 0.9))
    full[[1, 3]] += sample_level_maps(m2, 32, (70, 130), (1.25, 0.9))
    a = render_local(pieces, 4, (70, 130), (1.25, 0.9))
    assert torch.allclose(a, full, atol=1e-12)
    b = render_local(pieces, 4, (70, 130), (1.25, 0.9), normalize=True)
    assert torch.allclose(b, minmax_normalize(full), atol=1e-12)
    assert b[2].abs().max() == 0 and b[0].max() == 1


def test_band_matrix_hand_computed():
    from mmdet_odam.core.smoothing import band_matrices
    k = torch.tensor([[0.25, 0.5, 0.25]])
    # input of 2 samples zero-padded by 1 on each side -> 4 outputs
    b = band_matrices(k, 4, 2, offset=1)[0]
    expected = torch.tensor([[0.25, 0.00],
                             [0.50, 0.25],
                             [0.25, 0.50],
                             [0.00, 0.25]])
    torch.testing.assert_close(b, expected)


def test_gaussian_smooth_pad_and_both_implementations_agree():
    import torch.nn.functional as F
    from mmdet_odam.core import gaussian_smooth
    torch.manual_seed(0)
    sig = torch.tensor([0.0, 0.7, 1.3, 2.0])
    x = torch.randn(4, 3, 7, 9, dtype=torch.float64)
    for pad in (0, 4):
        a = gaussian_smooth(x, sig, pad=pad)  # matmul (small windows)
        b = gaussian_smooth(F.pad(x, (pad, ) * 4), sig)
        torch.testing.assert_close(a, b)
    # large windows take the grouped-conv implementation: same values
    big = torch.randn(4, 2, 70, 40, dtype=torch.float64)  # 70 > 64: conv
    conv = gaussian_smooth(big, sig)
    small = torch.cat([gaussian_smooth(big[:, :, i:i + 35], sig)  # matmul
                       for i in (0, 35)], 2)
    # rows away from the split see the same neighbourhood
    torch.testing.assert_close(conv[:, :, :30], small[:, :, :30])
    assert torch.equal(gaussian_smooth(x, torch.zeros(4)), x)


def test_render_patches_equals_paste_then_sample():
    from mmdet_odam.core import (paste_patches, render_patches,
                                 sample_level_maps)
    torch.manual_seed(0)
    shapes, strides = [(12, 16), (6, 8)], [(8., 8.), (16., 16.)]
    n, r = 7, 3
    patches = torch.rand(n, 2 * r + 1, 2 * r + 1, dtype=torch.float64)
    level_ids = torch.tensor([0, 0, 1, 1, 0, 1, 0])
    centers = torch.tensor([[0, 0], [11, 15], [0, 7], [3, 4], [5, 9],
                            [5, 0], [2, 14]])
    out_size, scale = (24, 32), (4., 4.)
    got = render_patches(patches, level_ids, centers, shapes, strides,
                         out_size, scale)
    for i in range(n):
        lvl = int(level_ids[i])
        pasted = paste_patches(patches[i:i + 1], centers[i:i + 1],
                               shapes[lvl])
        ref = sample_level_maps(pasted, strides[lvl], out_size, scale)
        torch.testing.assert_close(got[i:i + 1], ref)
    assert render_patches(patches[:0], level_ids[:0], centers[:0], shapes,
                          strides, out_size, scale).shape == (0, 24, 32)
