"""Odam-Train consistency and separation losses (paper Sec. 3.2, Eq. 3).

For every positive prediction of a detector we get a non-negative, vectorised
ODAM heat map ``H_n`` (cls target). Maps are grouped by the ground-truth object
their prediction was assigned to; per object the *reference* ``H_best`` is the
prediction whose box has the highest IoU with the object. Then::

    L_con = sum_p sum_{n in P(p)}   -log cos(H_best(p), H_n)
    L_sep = sum_p sum_{m not in P(p)} -log(1 - cos(H_best(p), H_m))
    L     = L_detector + (L_con + L_sep) / N        N = number of pairs

``loss_odam_con`` = w * L_con / N and ``loss_odam_sep`` = w * L_sep / N, so
mmengine logs both and their sum is the paper's term (times ``loss_weight`` w).

Variants of the authors' public code (github.com/Cyang-Zhao/ODAM,
``model/*_odamTrain/network.py``) are options, the paper is the default:

* :class:`ReferenceMode` ``image``: a single reference per image, the sample
  with the highest IoU over all objects (their FCOS ``match_loss`` as written).
* :class:`NegativeMode` ``overlap``: negatives are only predictions of other
  objects whose *predicted* box overlaps the reference's predicted box
  (IoU > 0; the authors use the "+1" IoU, here plain IoU > 0).
* ``iou_weighted``: positive pairs weighted by IoU(n, gt) / IoU(ref, gt)
  (their Faster R-CNN code).
* :class:`PairNorm` ``image``: each image's loss is divided by its own pair
  count and the images are summed (their FCOS code, with loss weight 0.5).

Not from the paper nor the authors (see ``docs/odam_train_diagnosis.md``):

* :class:`PairNorm` ``balanced``: each term is the mean over its own pairs,
  ``L_con / N_pos + L_sep / N_neg``. With one reference per object an image
  of R objects has R - 1 negative pairs per positive one, so under ``batch``
  the separation term outweighs consistency R - 1 : 1 in crowds.
* ``detach_reference``: ``H_best`` is a fixed target of its pairs (no
  gradient through the reference side of a pair; it still gets gradients
  as a sample of its own and of the other objects' pairs).
* ``min_objects`` (default 2): images with fewer objects that have positive
  samples contribute nothing, like the authors' data loader, which drops
  batches with an image of < 2 GT boxes. With 1, single-object images still
  get the consistency term.

Cosines are clamped to ``[eps, 1 - eps]`` (authors: 1e-4), so all-zero maps
give finite losses. The pair containing the reference with itself is counted
(Eq. 3 sums over all n in P(p); its loss is -log(1 - eps) ~ eps).

Memory and time: rendering the maps of N samples dominates (N x D maps and
their double backward); :func:`select_odam_samples` keeps, by IoU, at most
``max_per_object`` samples per object, ``max_samples`` per image (authors:
300) and, with ``max_pairs``, shrinks that further until
``#objects * #samples <= max_pairs`` (the number of pairs with one reference
per object). Heads call it *before* rendering maps.
"""
from enum import Enum
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS

from ..utils.options import parse_enum


class ReferenceMode(str, Enum):
    """Which prediction is the reference: ``object`` = one per GT object
    (paper, default), ``image`` = one per image (authors' FCOS code)."""
    OBJECT = 'object'
    IMAGE = 'image'


class NegativeMode(str, Enum):
    """Which predictions of other objects form separation pairs: ``all``
    (paper, default) or ``overlap`` (authors: box overlaps the reference)."""
    ALL = 'all'
    OVERLAP = 'overlap'


class PairNorm(str, Enum):
    """``batch``: (L_con + L_sep) / N over the batch (paper, default);
    ``image``: per-image division by its pairs, summed over images
    (authors' FCOS code); ``balanced``: L_con / N_pos + L_sep / N_neg over
    the batch, each term the mean over its own pairs."""
    BATCH = 'batch'
    IMAGE = 'image'
    BALANCED = 'balanced'


def _check_inputs(maps: Tensor, gt_inds: Tensor, ious: Tensor,
                  img_inds: Tensor, boxes: Optional[Tensor]) -> Tensor:
    if maps.dim() < 2:
        raise ValueError(f'maps must be (N, D) or (N, H, W), got shape '
                         f'{tuple(maps.shape)}')
    maps = maps.flatten(1)
    n = maps.size(0)
    for name, t in (('gt_inds', gt_inds), ('ious', ious),
                    ('img_inds', img_inds)):
        if t.dim() != 1 or t.numel() != n:
            raise ValueError(f'{name} must have shape ({n},) like maps, got '
                             f'{tuple(t.shape)}')
    if boxes is not None and tuple(boxes.shape) != (n, 4):
        raise ValueError(f'boxes must have shape ({n}, 4), got '
                         f'{tuple(boxes.shape)}')
    return maps


def _pairwise_overlap(a: Tensor, b: Tensor) -> Tensor:
    """(R, 4) x (N, 4) xyxy -> (R, N) bool, True where intersection > 0."""
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(
        a[:, None, 0], b[None, :, 0])
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(
        a[:, None, 1], b[None, :, 1])
    return (iw > 0) & (ih > 0)


def _rank_in_group(groups: Tensor) -> Tensor:
    """Rank of each element among the elements of its group, in order."""
    n = groups.numel()
    order = torch.sort(groups, stable=True)[1]
    g = groups[order]
    pos = torch.arange(n, device=groups.device)
    start = torch.ones_like(g, dtype=torch.bool)
    start[1:] = g[1:] != g[:-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)),
                         0)[0]
    rank = torch.empty_like(pos)
    rank[order] = pos - first
    return rank


def _num_distinct_prefix(groups: Tensor) -> Tensor:
    """(n,) number of distinct groups among the first k+1 elements."""
    return torch.cumsum((_rank_in_group(groups) == 0).long(), 0)


def select_odam_samples(ious: Tensor,
                        img_inds: Tensor,
                        gt_inds: Tensor,
                        max_samples: Optional[int] = None,
                        max_pairs: Optional[int] = None,
                        max_per_object: Optional[int] = None) -> Tensor:
    """Indices of the samples kept for the loss, bounding memory and time.

    Per image the samples are ranked by IoU (descending, ties by index). Then
    in this order: the top ``max_per_object`` of each object are kept (the
    authors' FCOS assigner gives at most ~6 positives per object), the top
    ``max_samples`` of the image (authors: 300), and the top ``k`` with the
    largest k such that ``#objects(top k) * k <= max_pairs`` (at least one).
    The best sample of an object (its reference) is never dropped while a
    worse one of the same object is kept.

    Args:
        ious (Tensor): (N,) IoU of each sample's box with its GT.
        img_inds (Tensor): (N,) image index of each sample.
        gt_inds (Tensor): (N,) assigned GT index (within its image).
        max_samples (int, optional): Per-image cap. None: no cap.
        max_pairs (int, optional): Per-image cap on reference x sample pairs.
        max_per_object (int, optional): Per-object cap.

    Returns:
        Tensor: (K,) long indices into the N samples, sorted ascending.
    """
    n = ious.numel()
    all_inds = torch.arange(n, device=ious.device)
    if n == 0 or (max_samples is None and max_pairs is None
                  and max_per_object is None):
        return all_inds
    keep = []
    for img in torch.unique(img_inds):
        inds = all_inds[img_inds == img]
        order = torch.sort(-ious[inds].detach(), stable=True)[1]
        inds = inds[order]
        if max_per_object is not None:
            inds = inds[_rank_in_group(gt_inds[inds]) < max_per_object]
        if max_samples is not None:
            inds = inds[:max_samples]
        if max_pairs is not None and inds.numel() > 0:
            n_obj = _num_distinct_prefix(gt_inds[inds])
            k = torch.arange(1, inds.numel() + 1, device=inds.device)
            ok = (n_obj * k) <= max_pairs
            k_max = int(ok.nonzero().max()) + 1 if ok.any() else 1
            inds = inds[:k_max]
        keep.append(inds)
    return torch.sort(torch.cat(keep))[0]


def odam_pair_losses(maps: Tensor,
                     gt_inds: Tensor,
                     ious: Tensor,
                     img_inds: Tensor,
                     boxes: Optional[Tensor] = None,
                     reference: Union[str, ReferenceMode] = 'object',
                     negatives: Union[str, NegativeMode] = 'all',
                     iou_weighted: bool = False,
                     min_objects: int = 2,
                     eps: float = 1e-4,
                     detach_reference: bool = False
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image sums of Eq. 3.

    Args:
        maps (Tensor): (N, D) (or (N, H, W)) non-negative heat maps.
        gt_inds (Tensor): (N,) assigned GT index within the image.
        ious (Tensor): (N,) IoU of each prediction with its assigned GT.
        img_inds (Tensor): (N,) image index of each prediction.
        boxes (Tensor, optional): (N, 4) xyxy predicted boxes; needed by
            ``negatives='overlap'``.
        reference, negatives, iou_weighted, min_objects, eps,
            detach_reference: see module doc.

    Returns:
        tuple[Tensor]: ``con`` (B,), ``sep`` (B,) loss sums, ``n_pos`` (B,)
        and ``n_neg`` (B,) positive / negative pair counts (float), one
        entry per distinct image index (ascending). Images that are skipped
        have zeros.
    """
    maps = _check_inputs(maps, gt_inds, ious, img_inds, boxes)
    reference = parse_enum(ReferenceMode, reference, 'reference')
    negatives = parse_enum(NegativeMode, negatives, 'negatives')
    if negatives == NegativeMode.OVERLAP and boxes is None:
        raise ValueError("negatives='overlap' needs the predicted boxes")
    if not 0 < eps < 0.5:
        raise ValueError(f'eps must be in (0, 0.5), got {eps}')
    unit = F.normalize(maps.float(), dim=1, eps=1e-12)
    ious = ious.detach().float()
    zero = maps.sum() * 0.
    cons, seps, n_pos, n_neg = [], [], [], []
    all_inds = torch.arange(maps.size(0), device=maps.device)
    for img in torch.unique(img_inds):
        inds = all_inds[img_inds == img]
        g = gt_inds[inds]
        objs = torch.unique(g)
        if objs.numel() < max(min_objects, 1):
            cons.append(zero)
            seps.append(zero)
            n_pos.append(zero.detach())
            n_neg.append(zero.detach())
            continue
        iou = ious[inds]
        # references: sort by IoU (desc, stable), then by object (stable);
        # the first sample of each object run is its best prediction.
        order = torch.sort(-iou, stable=True)[1]
        order = order[torch.sort(g[order], stable=True)[1]]
        g_sorted = g[order]
        is_first = torch.ones_like(g_sorted, dtype=torch.bool)
        is_first[1:] = g_sorted[1:] != g_sorted[:-1]
        ref = order[is_first]  # (R,) local indices, one per object
        if reference == ReferenceMode.IMAGE:
            ref = ref[torch.sort(-iou[ref], stable=True)[1][:1]]
        h = unit[inds]
        h_ref = h[ref].detach() if detach_reference else h[ref]
        cos = (h_ref @ h.t()).clamp(eps, 1 - eps)  # (R, n)
        pos = g[ref][:, None] == g[None, :]
        neg = ~pos
        if negatives == NegativeMode.OVERLAP:
            b = boxes[inds].detach()
            neg = neg & _pairwise_overlap(b[ref], b)
        w = pos.to(cos.dtype)
        if iou_weighted:
            ref_iou = iou[ref][:, None]
            ratio = iou[None, :] / ref_iou.clamp(min=1e-12)
            ratio = torch.where(ref_iou > 0, ratio, torch.ones_like(ratio))
            w = w * ratio
        cons.append(-(w * torch.log(cos)).sum())
        seps.append(-(neg.to(cos.dtype) * torch.log1p(-cos)).sum())
        n_pos.append(pos.sum().to(cos.dtype))
        n_neg.append(neg.sum().to(cos.dtype))
    if not cons:
        empty = zero.reshape(1)[:0]
        return empty, empty, empty.detach(), empty.detach()
    return (torch.stack(cons), torch.stack(seps), torch.stack(n_pos),
            torch.stack(n_neg))


def odam_train_loss(maps: Tensor,
                    gt_inds: Tensor,
                    ious: Tensor,
                    img_inds: Tensor,
                    boxes: Optional[Tensor] = None,
                    reference: Union[str, ReferenceMode] = 'object',
                    negatives: Union[str, NegativeMode] = 'all',
                    iou_weighted: bool = False,
                    normalize: Union[str, PairNorm] = 'batch',
                    min_objects: int = 2,
                    eps: float = 1e-4,
                    detach_reference: bool = False) -> Tuple[Tensor, Tensor]:
    """Normalised consistency and separation losses (no loss weight).

    Returns:
        tuple[Tensor, Tensor]: scalars ``(L_con / N, L_sep / N)`` for
        ``normalize='batch'``; for ``'image'`` the sums over images of each
        image's ``L / N_img``; for ``'balanced'`` ``(L_con / N_pos,
        L_sep / N_neg)``. Zero (still attached to ``maps``' graph) when
        there are no pairs.
    """
    normalize = parse_enum(PairNorm, normalize, 'normalize')
    con, sep, n_pos, n_neg = odam_pair_losses(
        maps, gt_inds, ious, img_inds, boxes, reference, negatives,
        iou_weighted, min_objects, eps, detach_reference)
    zero = maps.sum() * 0.
    if normalize == PairNorm.BATCH:
        n = (n_pos + n_neg).sum().clamp(min=1.)
        return zero + con.sum() / n, zero + sep.sum() / n
    if normalize == PairNorm.BALANCED:
        return (zero + con.sum() / n_pos.sum().clamp(min=1.),
                zero + sep.sum() / n_neg.sum().clamp(min=1.))
    n = (n_pos + n_neg).clamp(min=1.)
    return zero + (con / n).sum(), zero + (sep / n).sum()


def _opt_pos_int(value, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int or None, got '
                         f'{value!r}')
    return value


@MODELS.register_module()
class OdamTrainLoss(nn.Module):
    """Odam-Train losses as a registered module (``loss_odam`` of a head).

    Args:
        loss_weight (float): Weight w of both terms. Defaults to 1.0.
        sep_weight (float): Extra factor on the separation term only
            (``loss_odam_sep = w * sep_weight * L_sep``). Defaults to 1.0
            (the paper: both terms weighted alike).
        reference (str | ReferenceMode): ``object`` (paper) or ``image``.
        negatives (str | NegativeMode): ``all`` (paper) or ``overlap``.
        iou_weighted (bool): IoU-weight positive pairs (authors' R-CNN).
        normalize (str | PairNorm): ``batch`` (paper), ``image`` (authors'
            FCOS) or ``balanced`` (each term over its own pairs).
        min_objects (int): Images with fewer objects are skipped. Default 2.
        max_samples (int, optional): Per-image cap on samples (top IoU).
            Defaults to 300 (authors' ``max_train_cam_sample``).
        max_pairs (int, optional): Per-image cap on reference x sample pairs.
        max_per_object (int, optional): Per-object cap (top IoU); None: no
            cap. See :func:`select_odam_samples`.
        eps (float): Cosine clamp. Defaults to 1e-4 (authors).
        map_size (tuple[int, int], optional): Fixed (H, W) the heads render
            the maps at. None: padded input size / ``map_stride``.
        map_stride (int): See ``map_size``. Defaults to 16 (authors).
        smoothing (str): Smoothing of the maps the heads render; ``none``
            (default, authors' training code) or ``gaussian``.
        grad_mode (str): Gradient mode of the maps. Defaults to ``pos_relu``.
        detach_reference (bool): ``H_best`` as a fixed target of its pairs.
            Defaults to False (the paper and the authors' code do not
            detach it).
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 sep_weight: float = 1.0,
                 reference: Union[str, ReferenceMode] = 'object',
                 negatives: Union[str, NegativeMode] = 'all',
                 iou_weighted: bool = False,
                 normalize: Union[str, PairNorm] = 'batch',
                 min_objects: int = 2,
                 max_samples: Optional[int] = 300,
                 max_pairs: Optional[int] = None,
                 max_per_object: Optional[int] = None,
                 eps: float = 1e-4,
                 map_size: Optional[Sequence[int]] = None,
                 map_stride: int = 16,
                 smoothing: str = 'none',
                 grad_mode: str = 'pos_relu',
                 detach_reference: bool = False) -> None:
        super().__init__()
        if not float(loss_weight) >= 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        if not float(sep_weight) >= 0:
            raise ValueError(f'sep_weight must be >= 0, got {sep_weight}')
        if not 0 < eps < 0.5:
            raise ValueError(f'eps must be in (0, 0.5), got {eps}')
        if isinstance(min_objects, bool) or not isinstance(
                min_objects, int) or min_objects < 1:
            raise ValueError(f'min_objects must be an int >= 1, got '
                             f'{min_objects!r}')
        self.loss_weight = float(loss_weight)
        self.sep_weight = float(sep_weight)
        self.reference = parse_enum(ReferenceMode, reference, 'reference')
        self.negatives = parse_enum(NegativeMode, negatives, 'negatives')
        self.iou_weighted = bool(iou_weighted)
        self.normalize = parse_enum(PairNorm, normalize, 'normalize')
        self.min_objects = min_objects
        self.max_samples = _opt_pos_int(max_samples, 'max_samples')
        self.max_pairs = _opt_pos_int(max_pairs, 'max_pairs')
        self.max_per_object = _opt_pos_int(max_per_object, 'max_per_object')
        self.eps = float(eps)
        if map_size is not None:
            map_size = tuple(int(s) for s in map_size)
            if len(map_size) != 2 or min(map_size) < 1:
                raise ValueError(f'map_size must be (H, W) with positive '
                                 f'ints or None, got {map_size!r}')
        self.map_size = map_size
        self.map_stride = _opt_pos_int(map_stride, 'map_stride')
        if self.map_stride is None:
            raise ValueError('map_stride must be a positive int')
        if smoothing not in ('none', 'gaussian'):
            raise ValueError(f"Unknown smoothing {smoothing!r}; valid names: "
                             f"none, gaussian")
        self.smoothing = smoothing
        self.grad_mode = grad_mode
        self.detach_reference = bool(detach_reference)

    def out_size(self, batch_input_shape: Sequence[int]) -> Tuple[int, int]:
        """(H, W) the heads render maps at for a padded input (H_in, W_in)."""
        if self.map_size is not None:
            return self.map_size
        h, w = batch_input_shape[:2]
        return (max(1, int(h) // self.map_stride),
                max(1, int(w) // self.map_stride))

    def select(self, ious: Tensor, img_inds: Tensor,
               gt_inds: Tensor) -> Tensor:
        """Sample indices kept under the ``max_*`` caps."""
        return select_odam_samples(ious, img_inds, gt_inds, self.max_samples,
                                   self.max_pairs, self.max_per_object)

    def forward(self,
                maps: Tensor,
                gt_inds: Tensor,
                ious: Tensor,
                img_inds: Tensor,
                boxes: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Compute the losses.

        Args:
            maps (Tensor): (N, D) or (N, H, W) non-negative maps.
            gt_inds (Tensor): (N,) assigned GT index within each image.
            ious (Tensor): (N,) IoU of each prediction with its GT.
            img_inds (Tensor): (N,) image index of each prediction.
            boxes (Tensor, optional): (N, 4) predicted boxes (``overlap``).

        Returns:
            dict[str, Tensor]: ``loss_odam_con`` and ``loss_odam_sep``.
        """
        maps = _check_inputs(maps, gt_inds, ious, img_inds, boxes)
        keep = self.select(ious, img_inds, gt_inds)
        if keep.numel() != maps.size(0):
            maps, gt_inds, ious, img_inds = (maps[keep], gt_inds[keep],
                                             ious[keep], img_inds[keep])
            boxes = boxes[keep] if boxes is not None else None
        con, sep = odam_train_loss(maps, gt_inds, ious, img_inds, boxes,
                                   self.reference, self.negatives,
                                   self.iou_weighted, self.normalize,
                                   self.min_objects, self.eps,
                                   self.detach_reference)
        return dict(
            loss_odam_con=con * self.loss_weight,
            loss_odam_sep=sep * (self.loss_weight * self.sep_weight))
