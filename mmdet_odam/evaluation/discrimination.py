"""Object-discrimination statistics of candidate maps (paper Fig. 4,
Tab. 3a): Pearson correlations of the maps of candidates of the same
object, and of different objects whose boxes overlap.

``tools/analysis_tools/object_discrimination.py`` runs a trained dense
detector over a dataset and reports them, with the ODI of each candidate,
as 95 % bootstrap intervals over images.
"""
from typing import Dict

import torch
from torch import Tensor

KEYS = ('corr_same', 'corr_diff', 'odi_box')


def pearson_matrix(flat: Tensor) -> Tensor:
    """(N, D) maps -> (N, N) Pearson correlations (constant maps give 0)."""
    c = flat - flat.mean(-1, keepdim=True)
    c = c / c.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return c @ c.t()


def pair_values(corr: Tensor, obj: Tensor, box_iou: Tensor,
                iou_thr: float = 0.5) -> Dict[str, Tensor]:
    """Upper-triangle pair correlations: same object / different objects
    with box IoU > ``iou_thr``.

    Args:
        corr (Tensor): (N, N) correlations of the candidates' maps.
        obj (Tensor): (N,) matched GT index of each candidate.
        box_iou (Tensor): (N, N) IoU of the candidates' boxes.
    """
    triu = torch.ones_like(corr, dtype=torch.bool).triu(1)
    same = obj[:, None] == obj[None]
    return dict(corr_same=corr[triu & same],
                corr_diff=corr[triu & ~same & (box_iou > iou_thr)])
