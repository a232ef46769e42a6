"""95 % bootstrap intervals over images.

Objects of one image are not independent (same scene, same neighbours), so
the resampling unit is the image: draw as many images as there are, with
replacement, and recompute the figure on the objects of the drawn images.
The interval is the percentile interval of ``n_boot`` such draws.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np


class Interval(NamedTuple):
    """A figure with its bootstrap interval and sample sizes."""
    value: float
    low: float
    high: float
    n_objects: int
    n_images: int

    def overlaps(self, other: 'Interval') -> bool:
        """True when the two intervals share a point (no effect)."""
        return not (self.high < other.low or other.high < self.low)

    def format(self, scale: float = 1., digits: int = 3) -> str:
        """``value [low, high] (n objects, m images)``."""
        f = f'{{:.{digits}f}}'
        return (f'{f.format(self.value * scale)} '
                f'[{f.format(self.low * scale)}, '
                f'{f.format(self.high * scale)}] '
                f'({self.n_objects} obj., {self.n_images} img.)')


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f'n_boot must be a positive int, got {n_boot!r}')
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level}')


def bootstrap_images(stat: Callable[[np.ndarray], float],
                     n_images: int,
                     n_boot: int = 2000,
                     level: float = 0.95,
                     seed: int = 0) -> tuple:
    """Percentile bootstrap of any figure computed from a set of images.

    Args:
        stat (callable): ``stat(idx)`` -> float (or a 1-D array of several
            figures), the figure on the images ``idx`` (1-D int array,
            repeats allowed), e.g. AP of a detector on those images.
        n_images (int): number of images.
        n_boot (int): number of resamples. Defaults to 2000.
        level (float): coverage. Defaults to 0.95.
        seed (int): seed of the resampling (same seed, same interval).

    Returns:
        tuple: figure on all images, low, high (floats, or arrays for a
        vector ``stat``).
    """
    _check(n_boot, level)
    if n_images < 1:
        raise ValueError('bootstrap over images needs at least one image')
    rng = np.random.default_rng(seed)
    value = np.asarray(stat(np.arange(n_images)), dtype=float)
    draws = np.array([
        stat(rng.integers(0, n_images, n_images)) for _ in range(n_boot)
    ], dtype=float).reshape(n_boot, -1)
    a = (1 - level) / 2
    low, high = np.full(draws.shape[1], np.nan), np.full(draws.shape[1],
                                                         np.nan)
    for j in range(draws.shape[1]):
        d = draws[:, j][np.isfinite(draws[:, j])]
        if d.size:
            low[j], high[j] = np.quantile(d, [a, 1 - a])
    if value.ndim == 0:
        return float(value), float(low[0]), float(high[0])
    return value, low, high


def bootstrap_mean(values: Sequence[float],
                   image_ids: Sequence,
                   n_boot: int = 2000,
                   level: float = 0.95,
                   seed: int = 0,
                   weights: Optional[Sequence[float]] = None) -> Interval:
    """Mean over objects with a bootstrap interval over their images.

    Args:
        values (Sequence[float]): (N,) one value per object (or pair).
        image_ids (Sequence): (N,) image of each value (any hashable).
        n_boot, level, seed: see :func:`bootstrap_images`.
        weights (Sequence[float], optional): (N,) weights of a weighted mean.

    Returns:
        Interval: mean over all objects, its interval and sample sizes.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    ids = list(image_ids)
    if len(ids) != v.size:
        raise ValueError(f'values and image_ids differ in length: {v.size} '
                         f'vs {len(ids)}')
    w = np.ones_like(v) if weights is None else np.asarray(
        weights, dtype=float).reshape(-1)
    if w.size != v.size:
        raise ValueError(f'weights must have {v.size} entries, got {w.size}')
    if v.size == 0:
        nan = float('nan')
        return Interval(nan, nan, nan, 0, 0)
    if not np.isfinite(v).all():
        raise ValueError('values must be finite (drop missing objects first)')
    _, img = np.unique(np.asarray([str(i) for i in ids]), return_inverse=True)
    n_img = int(img.max()) + 1
    sums = np.bincount(img, weights=w * v, minlength=n_img)
    cnts = np.bincount(img, weights=w, minlength=n_img)

    def stat(idx):
        den = cnts[idx].sum()
        return sums[idx].sum() / den if den > 0 else float('nan')

    value, low, high = bootstrap_images(stat, n_img, n_boot, level, seed)
    return Interval(value, low, high, int(v.size), n_img)
