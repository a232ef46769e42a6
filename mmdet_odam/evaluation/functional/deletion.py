"""Deletion and Insertion curves (paper Sec. 4.2, Fig. 5a-b, Tab. 1).

Pixels are removed from (deletion) or added to (insertion) the image in the
order of the heat map, most important first, and a detector's score of the
explained object is recorded. Step size and fill follow the authors'
``eval_delet.py``/``eval_insert.py`` (the paper does not give them): ``L=100``
steps of ``k`` pixels, a score every ``eval_every=10`` steps, deleted pixels
replaced by uniform noise in [0, 255), insertion starting from a black image.
"""
from enum import Enum
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .regions import as_map
from .vea import curve_auc


class PerturbMode(str, Enum):
    """``deletion`` or ``insertion``."""
    DELETION = 'deletion'
    INSERTION = 'insertion'


def resize_map(heat: Tensor, size) -> Tensor:
    """Bicubic resize (authors: cv2.INTER_CUBIC) of an (H, W) map, clamped
    to its original value range."""
    heat = as_map(heat)
    if tuple(heat.shape) == tuple(size):
        return heat
    out = F.interpolate(heat[None, None], size=tuple(int(s) for s in size),
                        mode='bicubic', align_corners=False)[0, 0]
    return out.clamp(float(heat.min()), float(heat.max()))


def perturbation_curve(image: Tensor,
                       heat: Tensor,
                       score_fn: Callable[[Tensor], Tensor],
                       mode='deletion',
                       n_steps: int = 100,
                       eval_every: int = 10,
                       pixels_per_step: Optional[int] = None,
                       normalize: Optional[bool] = None,
                       batch_size: int = 4,
                       generator: Optional[torch.Generator] = None
                       ) -> Dict[str, object]:
    """Score curve of deletion or insertion for one object.

    Args:
        image (Tensor): (C, H, W) image, raw pixel values (0-255).
        heat (Tensor): (H', W') map; resized (bicubic) to (H, W) if needed.
        score_fn (callable): (B, C, H, W) float images -> (B,) scores of the
            explained object (see :func:`tracked_score`).
        mode (str | PerturbMode): ``deletion`` or ``insertion``.
        n_steps (int): number of steps ``L``.
        eval_every (int): score every this many steps.
        pixels_per_step (int, optional): ``k``; default ``ceil(H*W / L)``
            (whole image). The tool passes ``max(1, box_area // L)`` (authors).
        normalize (bool, optional): divide by the score of the unmodified
            image. Default: True for deletion (paper: "drop in percentage"),
            False for insertion (authors' code: raw score).
        batch_size (int): images per ``score_fn`` call.
        generator (torch.Generator, optional): for the deletion noise.

    Returns:
        dict: ``x`` (E,) fraction of the ``L`` steps done, ``curve`` (E,) in
        percent (score x 100, or % of the original score), ``auc`` (trapezoid
        over x in [0, 1]), ``score0`` (score of the unmodified image).
    """
    mode = PerturbMode(getattr(mode, 'value', mode))
    if n_steps < 1 or eval_every < 1:
        raise ValueError('n_steps and eval_every must be >= 1')
    image = torch.as_tensor(image).float()
    if image.dim() != 3:
        raise ValueError(f'image must be (C, H, W), got {tuple(image.shape)}')
    c, h, w = image.shape
    heat = resize_map(heat, (h, w))
    k = int(pixels_per_step) if pixels_per_step else -(-h * w // n_steps)
    k = max(1, k)
    # stable sort: ties (e.g. constant maps) keep raster order
    order = torch.sort(heat.reshape(-1), descending=True, stable=True)[1]
    if normalize is None:
        normalize = mode == PerturbMode.DELETION

    evals = [0] + list(range(eval_every, n_steps + 1, eval_every))
    if evals[-1] != n_steps:
        evals.append(n_steps)
    cur = image.clone() if mode == PerturbMode.DELETION else torch.zeros_like(
        image)
    flat_cur = cur.reshape(c, -1)
    flat_img = image.reshape(c, -1)
    frames = [image.clone()] if mode == PerturbMode.INSERTION else []
    for t in range(n_steps + 1):
        if t > 0:
            idx = order[(t - 1) * k:t * k]
            if len(idx):
                if mode == PerturbMode.DELETION:
                    flat_cur[:, idx] = torch.rand(
                        c, len(idx), generator=generator) * 255.0
                else:
                    flat_cur[:, idx] = flat_img[:, idx]
        if t in evals:
            frames.append(cur.clone())
    scores = []
    for i in range(0, len(frames), batch_size):
        s = torch.as_tensor(score_fn(torch.stack(frames[i:i + batch_size])))
        scores.append(s.detach().float().reshape(-1).cpu())
    scores = torch.cat(scores).numpy().astype(np.float64)
    if mode == PerturbMode.INSERTION:
        score0, scores = float(scores[0]), scores[1:]
    else:
        score0 = float(scores[0])
    if normalize:
        curve = 100.0 * scores / score0 if score0 > 0 else np.zeros_like(
            scores)
    else:
        curve = 100.0 * scores
    x = np.asarray(evals, dtype=np.float64) / n_steps
    return dict(x=x, curve=curve, auc=curve_auc(curve, x), score0=score0)
