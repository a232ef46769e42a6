"""Crop second stage: locality proved on the graph, gradients equal to the
full-map autograd."""
import pytest
import torch
from torch import nn

from mmdet_odam.core import CroppedLevel, NotLocal, receptive_radius
from mmdet_odam.core.local_grads import (_rank_within, grow_boxes,
                                          support_boxes)


class Tower(nn.Module):
    """Two branches of different depth on one input, like a dense head's
    classification and box towers (eval BatchNorm, a dilated layer, a
    per-channel scale, a channel slice)."""

    def __init__(self, c=4):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1),
                               nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=2, dilation=2),
                               nn.SiLU())
        self.b = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(1, 2 * c, 1, 1) + 0.5)
        for bn in self.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return [self.a(x).sigmoid(),
                (self.b(x) * self.scale)[:, 1:5].exp()]


def tower(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return Tower().to(dtype).eval()


def test_radius_is_the_longest_path_not_the_sum():
    net = tower()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    outs = net(x)
    assert receptive_radius(outs, x) == (3, 3)  # 1 + 2 (dilated), not + 1
    assert receptive_radius(outs[1:], x) == (1, 1)
    y = torch.randn_like(x, requires_grad=True)
    assert receptive_radius(outs, y) is None  # no path


@pytest.mark.parametrize('make, why', [
    (lambda x: nn.GroupNorm(2, 4)(x), 'NativeGroupNorm'),
    (lambda x: nn.Conv2d(4, 4, 3, stride=2, padding=1)(x), 'output of shape'),
    (lambda x: nn.Conv2d(4, 4, 3, padding=2)(nn.Conv2d(4, 4, 3)(x)),
     'does not keep the map size'),
    (lambda x: x * nn.AdaptiveAvgPool2d(1)(x), 'not known to be local'),
    (lambda x: nn.functional.avg_pool2d(nn.Upsample(scale_factor=2)(x), 2),
     'not known to be local'),
])
def test_non_local_layers_are_refused(make, why):
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with pytest.raises(NotLocal, match=why):
        receptive_radius([nn.Conv2d(4, 4, 1)(make(x))], x)


def test_training_batch_norm_and_other_levels_are_refused():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with pytest.raises(NotLocal, match='training'):
        receptive_radius([nn.BatchNorm2d(4).train()(x)], x)
    other = torch.randn(2, 4, 8, 8, requires_grad=True)
    with pytest.raises(NotLocal, match='another input level'):
        receptive_radius([x + other], x, [other])


def sparse_upstream(shape, positions, seed=0):
    """(m, B, C, H, W) upstream, row r non-zero at its (b, y, x)
    positions only."""
    g = torch.Generator().manual_seed(seed)
    up = torch.zeros(len(positions), *shape, dtype=torch.float64)
    for r, pos in enumerate(positions):
        for b, y, x in pos:
            up[r, b, :, y, x] = torch.randn(shape[1], generator=g,
                                            dtype=torch.float64)
    return up


def full_vjp(outs, leaf, ups):
    return torch.stack([
        torch.autograd.grad(outs, leaf, [u[r] for u in ups],
                            retain_graph=True)[0]
        for r in range(ups[0].shape[0])])


def test_cropped_vjp_equals_full_map_autograd():
    """Rows at the borders, in the corners, on two images, sharing a
    window (two targets of one detection) and spread over two cells."""
    net = tower()
    leaf = torch.randn(2, 4, 13, 15, dtype=torch.float64,
                       requires_grad=True)
    outs = net(leaf)
    rows = [[(0, 6, 7)], [(0, 6, 7)], [(1, 0, 0)], [(1, 12, 14)],
            [(0, 0, 9)], [(1, 5, 3), (1, 6, 4)]]
    ups = [sparse_upstream((2, 4, 13, 15), rows, seed=1),
           sparse_upstream((2, 4, 13, 15), rows[:3] + [[]] * 3, seed=2)]
    local = CroppedLevel(net, leaf, outs, receptive_radius(outs, leaf))
    got = local.vjp(ups)
    assert local.declined is None and got is not None
    assert got.values.shape[-2:] == (8, 8)  # radius 3, support 2 x 2
    got = got.dense(len(rows))
    want = full_vjp(outs, leaf, ups)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    # the gradients are local: the crops did less than the whole map
    assert (want[0] != 0).sum() < want[0].numel() / 4


def test_an_unused_output_is_skipped():
    net = tower()
    leaf = torch.randn(1, 4, 12, 12, dtype=torch.float64,
                       requires_grad=True)
    outs = net(leaf)
    up = sparse_upstream((1, 4, 12, 12), [[(0, 3, 8)], [(0, 11, 0)]])
    local = CroppedLevel(net, leaf, outs, receptive_radius(outs, leaf))
    got = local.vjp([up, None]).dense(2)
    want = full_vjp(outs[:1], leaf, [up])
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_a_forward_that_is_not_the_map_declines():
    """A crop forward with a global term (its value depends on the whole
    crop) differs from the full map where the gradient flows."""
    net = tower()
    leaf = torch.randn(1, 4, 16, 16, dtype=torch.float64,
                       requires_grad=True)
    outs = net(leaf)

    def global_forward(x):
        return [o + x.mean() for o in net(x)]

    local = CroppedLevel(global_forward, leaf, outs,
                         receptive_radius(outs, leaf))
    up = sparse_upstream((1, 4, 16, 16), [[(0, 8, 8)]])
    assert local.vjp([up, None]) is None
    assert 'differs from the full map' in local.declined
    assert local.vjp([up, None]) is None  # and stays declined


def test_a_forward_that_fails_on_crops_declines():
    net = tower()
    leaf = torch.randn(1, 4, 16, 16, dtype=torch.float64,
                       requires_grad=True)
    outs = net(leaf)

    def needs_the_map(x):
        if x.shape[-1] != 16:
            raise RuntimeError('sizes of the levels do not match')
        return net(x)

    local = CroppedLevel(needs_the_map, leaf, outs,
                         receptive_radius(outs, leaf))
    up = sparse_upstream((1, 4, 16, 16), [[(0, 8, 8)]])
    assert local.vjp([up, None]) is None
    assert 'forward on crops failed' in local.declined


def test_windows_larger_than_the_map_fraction_decline_per_call():
    net = tower()
    leaf = torch.randn(1, 4, 16, 16, dtype=torch.float64,
                       requires_grad=True)
    outs = net(leaf)
    local = CroppedLevel(net, leaf, outs, receptive_radius(outs, leaf))
    spread = sparse_upstream((1, 4, 16, 16), [[(0, 0, 0), (0, 8, 8)]])
    assert local.vjp([spread, None]) is None and local.declined is None
    one = sparse_upstream((1, 4, 16, 16), [[(0, 0, 0)]])
    assert local.vjp([one, None]) is not None  # radius 3: a 7x7 window


def test_windows_shift_inside_the_map():
    support = torch.zeros(3, 1, 10, 10, dtype=torch.bool)
    support[0, 0, 0, 0] = True
    support[1, 0, 9, 5] = True
    support[2, 0, 4, 4:6] = True  # two cells wide
    boxes = support_boxes(support)
    assert boxes.tolist() == [[0, 0, 0, 0, 0], [0, 9, 9, 5, 5],
                              [0, 4, 4, 4, 5]]
    img, y0, x0, size = grow_boxes(boxes, (2, 2), (10, 10))
    assert size == (5, 6)  # widest support 2 + 2 * 2
    assert y0.tolist() == [0, 5, 2] and x0.tolist() == [0, 3, 2]
    assert img.tolist() == [0, 0, 0]


def test_rank_within_groups():
    groups = torch.tensor([3, 1, 3, 3, 0, 1])
    assert _rank_within(groups).tolist() == [0, 0, 1, 2, 0, 1]


def two_level_detections(seed=0):
    """The tower on two levels and a post-processing that picks, per
    detection, a class score and a box difference at one position; rows
    (targets) of one detection share its owner."""
    net = tower(seed)
    g = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(1, 4, n, n, generator=g, dtype=torch.float64,
                          requires_grad=True) for n in (12, 6)]
    groups = [net(lf) for lf in leaves]
    dets = [(0, 0, 0, 0), (0, 5, 6, 2), (0, 11, 3, 1), (1, 2, 2, 3)]
    ys = []
    for lvl, y, x, c in dets:
        cls, box = groups[lvl]
        ys += [cls[0, c, y, x], box[0, 0, y, x] - box[0, 2, y, x]]
    owners = torch.arange(len(dets)).repeat_interleave(2)
    return net, torch.stack(ys), leaves, groups, owners


def test_staged_grads_on_crops_equal_plain_rows():
    """Level 1 (12x12) on crops from windowed first-stage gradients, level
    2 (6x6: a window would cover most of it) by the full backward."""
    from mmdet_odam.core import row_grads, split_by_owner, staged_row_grads
    from mmdet_odam.core.windows import Windows
    net, ys, leaves, groups, owners = two_level_detections()
    local = {i: CroppedLevel(net, lf, grp, receptive_radius(grp, lf))
             for i, (lf, grp) in enumerate(zip(leaves, groups))}
    state = {'owned': split_by_owner(ys, owners, [t for g in groups
                                                  for t in g]),
             'local': local}
    rows = torch.arange(len(ys))
    staged = staged_row_grads(ys, leaves, groups, rows, state)
    assert isinstance(staged[0], list) and all(
        isinstance(w, Windows) for w in staged[0])  # level 1: crops alone
    assert isinstance(staged[1], torch.Tensor)
    plain = row_grads(ys, leaves, rows)
    torch.testing.assert_close(sum(w.dense(len(rows)) for w in staged[0]),
                               plain[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(staged[1], plain[1], rtol=0, atol=1e-12)
    # and from dense first-stage gradients (no split)
    state = {'local': local}
    staged = staged_row_grads(ys, leaves, groups, rows, state)
    torch.testing.assert_close(sum(w.dense(len(rows)) for w in staged[0]),
                               plain[0], rtol=0, atol=1e-12)


def test_owner_boxes_hand_computed():
    from mmdet_odam.core import split_by_owner
    _, ys, _, groups, owners = two_level_detections()
    owned = split_by_owner(ys, owners, [t for g in groups for t in g])
    # tensor 0: level 1's class scores; owners 0-2 on level 1, 3 not
    assert owned.reaches(0).tolist() == [True, True, True, False]
    assert owned.boxes(0)[:3].tolist() == [[0, 0, 0, 0, 0], [0, 5, 5, 6, 6],
                                           [0, 11, 11, 3, 3]]


def test_non_local_ops_off_the_input_path_are_allowed():
    """A weight standardised before the convolution (a mean over the
    weight) does not touch the input's locality."""
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    ws = (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3),
                                                       keepdim=True)
    out = nn.functional.conv2d(x, ws, padding=1)
    assert receptive_radius([out], x) == (1, 1)
