"""Bootstrap intervals over images, on cases that can be checked by hand."""
import numpy as np
import pytest

from mmdet_odam.evaluation.functional.bootstrap import (Interval,
                                                        bootstrap_images,
                                                        bootstrap_mean)


def test_two_images_interval_spans_the_extremes():
    # two images, one object each: a resample is {0,0} (p 1/4), {0,1}
    # (1/2) or {1,1} (1/4), so the 2.5 % / 97.5 % quantiles are 0 and 1
    iv = bootstrap_mean([0., 1.], ['a', 'b'], n_boot=400, seed=0)
    assert iv.value == 0.5 and (iv.low, iv.high) == (0.0, 1.0)
    assert (iv.n_objects, iv.n_images) == (2, 2)


def test_objects_are_pooled_per_image():
    # image a: three objects of 1, image b: one object of 0. Pooled mean
    # 3/4; resample means are 1 (aa), 3/4 (ab) or 0 (bb)
    iv = bootstrap_mean([1., 1., 1., 0.], [0, 0, 0, 1], n_boot=400)
    assert iv.value == pytest.approx(0.75)
    assert (iv.low, iv.high) == (0.0, 1.0)
    assert (iv.n_objects, iv.n_images) == (4, 2)
    # any figure of the drawn images: the largest image index drawn among
    # 3 images has quantiles 0 (p 1/27 > 2.5 %) and 2
    assert bootstrap_images(lambda i: float(i.max()), 3, 400) == (2., 0., 2.)


def test_constant_values_give_a_point_and_seed_reproduces():
    iv = bootstrap_mean([0.3] * 6, [0, 0, 1, 2, 3, 3])
    assert iv.low == pytest.approx(0.3) and iv.high == pytest.approx(0.3)
    vals = np.random.default_rng(1).random(50)
    ids = np.arange(50) // 5
    a = bootstrap_mean(vals, ids, seed=3)
    b = bootstrap_mean(vals, ids, seed=3)
    assert a == b and a.low < a.value < a.high


def test_interval_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.random(20), np.arange(20))
    large = bootstrap_mean(rng.random(200), np.arange(200))
    # width ~ 1/sqrt(n): 10x more images -> ~3x narrower
    ws, wl = small.high - small.low, large.high - large.low
    assert 2 < ws / wl < 5
    assert large.low < 0.5 < large.high


def test_overlap_and_format():
    a = Interval(0.5, 0.4, 0.6, 10, 3)
    assert a.overlaps(Interval(0.65, 0.6, 0.7, 1, 1))
    assert not a.overlaps(Interval(0.7, 0.61, 0.8, 1, 1))
    assert a.format(100, 1) == '50.0 [40.0, 60.0] (10 obj., 3 img.)'


def test_bad_input():
    with pytest.raises(ValueError, match='length'):
        bootstrap_mean([1., 2.], [0])
    with pytest.raises(ValueError, match='finite'):
        bootstrap_mean([1., float('nan')], [0, 1])
    with pytest.raises(ValueError, match='n_boot'):
        bootstrap_mean([1.], [0], n_boot=0)
    with pytest.raises(ValueError, match='level'):
        bootstrap_images(lambda i: 0., 3, level=95)
    assert bootstrap_mean([], []).n_objects == 0


def test_vector_figures_share_the_draws():
    # (min, max) of the drawn image indices of 2 images: draws 00, 01, 10,
    # 11 -> min in {0, 1}, max in {0, 1}, each with quantiles 0 and 1
    v, lo, hi = bootstrap_images(lambda i: [i.min(), i.max()], 2, 400)
    assert v.tolist() == [0., 1.]
    assert lo.tolist() == [0., 0.] and hi.tolist() == [1., 1.]
