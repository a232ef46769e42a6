# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Odam-NMS (paper Sec. 3.3, App. A.1 Algorithm 1).

Greedy duplicate removal that looks at *what each candidate looked at*: a
candidate ``p`` (taken by descending score) is a duplicate of an already kept
detection ``d`` of the same class when

- ``IoU(p, d) >  iou_threshold`` and ``corr(p, d) >= corr_low``   (rule 1), or
- ``IoU(p, d) <= iou_threshold`` and ``corr(p, d) >  corr_high``  (rule 2),

where ``corr`` is the correlation of the two candidates' ODAM heat maps
(target: confidence score, resized so the short edge is 50, vectorised; see
:func:`nms_map_size`). Otherwise it is kept.

Boundary conventions (all chosen so that ``corr_low=0, corr_high=1`` is
*exactly* mmcv's ``nms``/``batched_nms``, ties included):

- IoU equal to the threshold belongs to the low-IoU branch (rule 2), as in
  mmcv's ``iou > thr`` test and in the authors' code; Algorithm 1 writes
  ``IoU >= T_iou`` for rule 1, which differs only on this measure-zero set.
  The IoU is computed in float32 with the same formula and operation order as
  mmcv's CPU kernel (no ``+1``), and ``batched_odam_nms`` applies mmcv's
  class-offset trick, so the numbers compared with the threshold are
  bit-identical to mmcv's.
- Rule 1 compares ``corr >= corr_low`` (inclusive, authors' code; Algorithm 1
  writes ``>``) so that with ``corr_low=0`` a zero correlation (e.g. a vanished
  map) still suppresses, as classic NMS does.
- Rule 2 compares ``corr > corr_high`` (strict, Algorithm 1; the authors' code
  uses ``>=``) so that ``corr_high=1`` switches rule 2 off even for identical
  maps.
- ``corr`` is clamped to ``[0, 1]``: a negative Pearson correlation is "no
  evidence of the same object", i.e. 0.

Correlation types (:class:`CorrType`):

- ``pearson`` (default, the paper's "normalised correlation"): cosine of the
  *mean-subtracted* vectors. A map with zero variance (all zero or constant)
  has correlation 0 with everything.
- ``cosine`` (authors' code, ``pytorch_nms_utils.py``): dot product of the
  L2-normalised non-negative maps, in [0, 1]. Two maps that are both
  positive everywhere have a high cosine even when their peaks differ, so
  ``cosine`` values run higher than ``pearson`` for the same pair. An all-zero
  map has correlation 0 with everything.

Complexity: IoU matrix ``O(K^2)``; correlations are computed block-wise only
between kept detections and the candidates still alive after them
(``O(K_kept * K * D)`` multiply-adds as matrix products, plus ``O(K * B * D)``
inside blocks of ``B`` candidates), with no Python loop over pairs.
"""
import math
from contextlib import contextmanager
from enum import Enum
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
from torch import Tensor

from mmdet.registry import MODELS

from ..core import box_iou
from ..utils.cuda_graphs import CudaGraphCache

__all__ = [
    'CorrType', 'OdamNMS', 'odam_nms', 'batched_odam_nms',
    'check_odam_nms_cfg', 'nms_map_size', 'map_correlation',
    'normalize_maps', 'pairwise_iou', 'ODAM_NMS_CFG_KEYS',
    'observe_odam_nms', 'check_test_cfg_nms'
]


class CorrType(str, Enum):
    """How two ODAM map vectors are compared."""
    PEARSON = 'pearson'  # paper: normalised (mean-subtracted) correlation
    COSINE = 'cosine'  # authors' code: cosine of L2-normalised maps


# keys accepted in ``test_cfg.nms`` when ``type == 'odam_nms'``
ODAM_NMS_CFG_KEYS = ('type', 'iou_threshold', 'corr_low', 'corr_high',
                     'corr_type', 'max_num', 'split_thr', 'class_agnostic',
                     'cuda_graph')
_ODAM_NMS_TYPES = ('odam_nms', )

# blocks of candidates processed together by the greedy loop
_BLOCK = 128


def _as_corr_type(corr_type: Union[str, CorrType]) -> CorrType:
    try:
        return CorrType(corr_type)
    except ValueError:
        raise ValueError(
            f'corr_type must be one of {[c.value for c in CorrType]}, '
            f'got {corr_type!r}') from None


def _check_unit(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f'{name} must be in [0, 1], got {value}')
    return value


def check_odam_nms_cfg(nms_cfg: Dict) -> None:
    """Validate an Odam-NMS config dict; raise ``ValueError`` naming the key.

    Accepted keys: ``type`` (``'odam_nms'``), ``iou_threshold``,
    ``corr_low``, ``corr_high`` (all in [0, 1], ``corr_low <= corr_high``),
    ``corr_type`` (``'pearson'`` | ``'cosine'``), ``max_num`` (int, <= 0
    means no cap), ``split_thr`` (accepted for mmcv compatibility, unused),
    ``class_agnostic`` (bool), ``cuda_graph`` (bool: dense heads on a GPU
    replay the candidate maps as captured CUDA graphs; default True).
    """
    if not isinstance(nms_cfg, dict):
        raise ValueError(f'nms cfg must be a dict, got {type(nms_cfg)}')
    unknown = sorted(set(nms_cfg) - set(ODAM_NMS_CFG_KEYS))
    if unknown:
        raise ValueError(f'unknown key(s) {unknown} in odam_nms cfg; '
                         f'allowed: {list(ODAM_NMS_CFG_KEYS)}')
    nms_type = nms_cfg.get('type', 'odam_nms')
    if nms_type not in _ODAM_NMS_TYPES:
        raise ValueError(f"type must be 'odam_nms', got {nms_type!r}")
    iou = _check_unit('iou_threshold', nms_cfg.get('iou_threshold', 0.5))
    del iou
    low = _check_unit('corr_low', nms_cfg.get('corr_low', 0.2))
    high = _check_unit('corr_high', nms_cfg.get('corr_high', 0.8))
    if low > high:
        raise ValueError(f'corr_low ({low}) must be <= corr_high ({high})')
    _as_corr_type(nms_cfg.get('corr_type', CorrType.PEARSON))
    max_num = nms_cfg.get('max_num', -1)
    if isinstance(max_num, bool) or not isinstance(max_num, int):
        raise ValueError(f'max_num must be an int, got {max_num!r}')
    split_thr = nms_cfg.get('split_thr', 10000)
    if isinstance(split_thr, bool) or not isinstance(split_thr, (int, float)):
        raise ValueError(f'split_thr must be a number, got {split_thr!r}')
    for key in ('class_agnostic', 'cuda_graph'):
        if not isinstance(nms_cfg.get(key, False), bool):
            raise ValueError(f'{key} must be a bool, got {nms_cfg[key]!r}')


def check_test_cfg_nms(test_cfg: Optional[Dict]) -> None:
    """Build-time check for heads: validate ``test_cfg['nms']`` when its
    type is ``'odam_nms'`` (no-op for None or other NMS types)."""
    if not test_cfg:
        return
    nms_cfg = test_cfg.get('nms', None)
    if isinstance(nms_cfg, dict) and nms_cfg.get('type') == 'OdamNMS':
        raise ValueError("test_cfg.nms: type must be 'odam_nms' (the "
                         "registered name OdamNMS is for MODELS.build)")
    if isinstance(nms_cfg, dict) and \
            nms_cfg.get('type') in _ODAM_NMS_TYPES:
        try:
            check_odam_nms_cfg(nms_cfg)
        except ValueError as e:
            raise ValueError(f'test_cfg.nms: {e}') from None


def nms_map_size(img_shape: Sequence[int],
                 short_edge: int = 50) -> Tuple[int, int]:
    """Size ``(h_o, w_o)`` of the Odam-NMS map grid for an image ``(h, w)``.

    The short edge becomes ``short_edge`` (paper: 50), the long edge keeps the
    aspect ratio (rounded, at least 1).
    """
    if len(img_shape) < 2:
        raise ValueError(f'img_shape must be (h, w), got {img_shape!r}')
    h, w = float(img_shape[0]), float(img_shape[1])
    if not (h > 0 and w > 0):
        raise ValueError(f'img_shape must be positive, got {img_shape!r}')
    if int(short_edge) < 1:
        raise ValueError(f'short_edge must be >= 1, got {short_edge}')
    s = int(short_edge) / min(h, w)
    if h <= w:
        return int(short_edge), max(1, int(round(w * s)))
    return max(1, int(round(h * s))), int(short_edge)


def pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU matrix (K, K) of xyxy boxes, float32, no ``+1``.

    :func:`~mmdet_odam.core.box_iou` in float32: the formula and operation
    order of mmcv's CPU ``nms`` kernel (``inter / (area_i + area_j -
    inter)``), so values are bit-identical wherever the union is > 0.
    """
    b = boxes.float()
    return box_iou(b, b)


def _normalize_rows_(x: Tensor, corr_type: CorrType) -> Tuple[Tensor, Tensor]:
    """:func:`normalize_maps` of a float32 (N, D) ``x`` in place, and a 0-dim
    bool tensor: all values finite (checked by the caller; no host sync
    here)."""
    # amin + amax: ~15x faster than aminmax(dim=1) on the CPU
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    # 0 * (NaN | Inf) is NaN: one reduction checks both extremes
    finite = hi.mul(0).add_(lo, alpha=0).eq(0).all()
    # scale-free: divide by the max |value| first (no under/overflow);
    # all-zero rows stay zero
    tiny = torch.finfo(x.dtype).tiny
    x.div_(torch.maximum(hi, lo.neg()).clamp_min_(tiny))
    if corr_type is CorrType.PEARSON:
        x.sub_(x.mean(dim=1, keepdim=True))
        # residuals of a constant vector are rounding noise (~1e-7 each)
        zero_tol = 1e-5 * math.sqrt(x.shape[1])
    else:
        zero_tol = 0.0
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    valid = norm > zero_tol
    x.div_(norm.clamp_min_(tiny))
    return x.mul_(valid), finite


def normalize_maps(maps: Tensor,
                   corr_type: Union[str, CorrType] = CorrType.PEARSON,
                   inplace: bool = False) -> Tensor:
    """Unit vectors (N, D) whose dot products are the correlations.

    Args:
        maps (Tensor): (N, D) or (N, H, W) map vectors (any scale).
        corr_type: ``pearson`` (mean-subtracted) or ``cosine``.
        inplace (bool): reuse ``maps``' memory when it is float32.

    Returns:
        Tensor: (N, D) float32; rows of zero-variance
        (pearson) or all-zero (cosine) maps are all zero, so their
        correlations are 0, never NaN.
    """
    corr_type = _as_corr_type(corr_type)
    x = maps.reshape(maps.shape[0], -1)
    if x.dtype != torch.float32:
        x = x.float()
    elif not inplace or not x.is_contiguous():
        x = x.clone()
    if x.shape[0] == 0 or x.shape[1] == 0:
        return x
    # reductions only (large temporaries are slow on CPU)
    x, finite = _normalize_rows_(x, corr_type)
    if not bool(finite):
        raise ValueError('maps contain NaN or Inf values')
    return x


def map_correlation(maps_a: Tensor,
                    maps_b: Optional[Tensor] = None,
                    corr_type: Union[str, CorrType] = CorrType.PEARSON
                    ) -> Tensor:
    """Correlation matrix (Na, Nb) in [0, 1] between map vectors.

    ``maps_b=None`` compares ``maps_a`` with itself. Negative Pearson values
    are clamped to 0.
    """
    za = normalize_maps(maps_a, corr_type)
    zb = za if maps_b is None else normalize_maps(maps_b, corr_type)
    return (za @ zb.T).clamp_(0.0, 1.0)


class _Rule:
    """The two duplicate rules for fixed thresholds."""

    def __init__(self, iou_threshold: float, corr_low: float,
                 corr_high: float):
        self.t_iou = torch.tensor(iou_threshold, dtype=torch.float32)
        self.low = corr_low
        self.high = corr_high
        # with corr in [0, 1]: rule 1 always fires when corr_low <= 0, rule 2
        # never fires when corr_high >= 1
        self.rule1_always = corr_low <= 0.0
        self.rule2_never = corr_high >= 1.0
        self.needs_corr = not (self.rule1_always and self.rule2_never)

    def dup(self, high_iou: Tensor, corr: Optional[Tensor]) -> Tensor:
        """Boolean duplicate matrix from ``IoU > T`` and the correlations."""
        if not self.needs_corr:
            return high_iou
        r1 = high_iou if self.rule1_always else high_iou & (corr >= self.low)
        if self.rule2_never:
            return r1
        return r1 | (~high_iou & (corr > self.high))


def _as_index(keep: np.ndarray, device) -> Tensor:
    """Kept positions of a boolean array as a long tensor on ``device``
    (no boolean indexing on the device: no host sync)."""
    return torch.from_numpy(np.flatnonzero(keep)).to(device)


def _dup_matrix(boxes: Tensor, maps: Optional[Tensor], groups: Tensor,
                rule: _Rule, corr: Optional[Tensor] = None) -> Tensor:
    """(K, K) bool on the inputs' device: ``d[i, j]``, i < j, when sorted
    candidate j is a duplicate of candidate i (same group, either rule)."""
    high = pairwise_iou(boxes) > rule.t_iou
    c = None
    if rule.needs_corr:
        # unclamped correlations give the same rule outcomes (thresholds
        # are in [0, 1] and rule 1 ignores corr when corr_low <= 0)
        c = corr.float() if corr is not None else maps @ maps.T
    d = rule.dup(high, c)
    d &= groups[:, None] == groups[None]
    return d.triu_(1)


def _scan(d: np.ndarray) -> np.ndarray:
    """Greedy keep from a (K, K) upper-triangular duplicate matrix: only
    rows with a duplicate can remove anything."""
    removed = np.zeros(d.shape[0], dtype=bool)
    for i in np.flatnonzero(d.any(1)):
        if not removed[i]:
            removed |= d[i]
    return ~removed


def _greedy_dense(boxes: Tensor, maps: Optional[Tensor], groups: Tensor,
                  rule: _Rule, corr: Optional[Tensor] = None) -> np.ndarray:
    """:func:`_greedy_sorted` from the whole (K, K) duplicate matrix: a
    few large tensor ops and one host copy (the GPU way); the greedy scan
    then runs over boolean rows on the host."""
    return _scan(_dup_matrix(boxes, maps, groups, rule, corr).cpu().numpy())


def _padded_dup_matrix(k: Tensor, boxes: Tensor, maps: Tensor,
                       groups: Tensor, rule: _Rule,
                       corr_type: CorrType) -> Tuple[Tensor, Tensor]:
    """:func:`_dup_matrix` of the first ``k`` (0-dim tensor) of sorted
    candidates padded to a fixed length, and the maps' finiteness flag; the
    padding (whatever it holds) becomes zero boxes and maps with unique
    negative groups: all-False rows and columns. Tensor ops only (what
    :class:`DupMatrixGraphs` captures)."""
    ar = torch.arange(boxes.shape[0], device=boxes.device)
    valid = ar < k
    b = torch.where(valid[:, None], boxes, 0.0)
    g = torch.where(valid, groups, -1 - ar)
    z = torch.where(valid[:, None], maps, 0.0).float()
    z, finite = _normalize_rows_(z, corr_type)
    return _dup_matrix(b, z, g, rule), finite


class DupMatrixGraphs:
    """CUDA graphs of Odam-NMS's duplicate matrix on a GPU
    (:func:`_padded_dup_matrix`: normalised maps, IoU, both rules, groups;
    ~40 small kernels) per (candidate bucket, map length, thresholds,
    correlation type, device), captured on a key's second sighting and
    replayed afterwards (:class:`~mmdet_odam.utils.cuda_graphs.
    CudaGraphCache`). Inputs are the score-sorted candidates, padded to the
    bucket (next power of two >= 64)."""

    def __init__(self, max_graphs: int = 8, min_bucket: int = 64):
        self.cache = CudaGraphCache(max_graphs, min_bucket)

    def clear(self) -> None:
        self.cache.clear()

    def run(self, boxes: Tensor, maps: Tensor, groups: Tensor, rule: _Rule,
            corr_type: CorrType) -> Optional[np.ndarray]:
        """Kept mask (K,) of sorted candidates, or None (run eagerly).
        Raises ``ValueError`` for non-finite maps."""
        k, dim = maps.shape
        nb = self.cache.bucket(k)
        dev = maps.device
        key = (nb, dim, float(rule.t_iou), rule.low, rule.high, corr_type,
               dev.index, maps.dtype, boxes.dtype)

        def make():
            st = dict(
                k=torch.zeros((), dtype=torch.long, device=dev),
                boxes=torch.zeros(nb, 4, dtype=boxes.dtype, device=dev),
                groups=torch.zeros(nb, dtype=torch.long, device=dev),
                maps=torch.zeros(nb, dim, dtype=maps.dtype, device=dev))
            return st, lambda: _padded_dup_matrix(
                st['k'], st['boxes'], st['maps'], st['groups'], rule,
                corr_type)

        entry = self.cache.get(key, make)
        if entry is None:
            return None
        st = entry.static
        st['k'].fill_(k)
        st['boxes'][:k].copy_(boxes)
        st['groups'][:k].copy_(groups)
        st['maps'][:k].copy_(maps)
        d, finite = entry.replay()
        d = d.cpu().numpy()
        if not bool(finite):
            raise ValueError('maps contain NaN or Inf values')
        return _scan(d[:k, :k])


# the duplicate-matrix graphs of Odam-NMS on GPUs (``cuda_graph``)
DUP_GRAPHS = DupMatrixGraphs()


def _greedy_sorted(boxes: Tensor, maps: Optional[Tensor], groups: Tensor,
                   rule: _Rule, corr: Optional[Tensor] = None,
                   dense: Optional[bool] = None) -> np.ndarray:
    """Greedy Odam-NMS on candidates already sorted by descending score.

    Args:
        boxes (Tensor): (K, 4) boxes used for IoU.
        maps (Tensor | None): (K, D) unit vectors (see :func:`normalize_maps`);
            None when ``rule`` needs no correlation.
        groups (Tensor): (K,) class ids; only equal ids can suppress.
        rule (_Rule): thresholds.
        corr (Tensor, optional): (K, K) precomputed correlations (same
            order), used instead of ``maps``.
        dense (bool, optional): all pairs at once (:func:`_greedy_dense`)
            or blocks of candidates that skip the removed ones (fewer
            multiply-adds, more small ops). Default: dense on GPUs.

    Returns:
        np.ndarray: (K,) bool, True for kept candidates.
    """
    k = boxes.shape[0]
    keep = np.zeros(k, dtype=bool)
    if k == 0:
        return keep
    if dense if dense is not None else boxes.is_cuda:
        return _greedy_dense(boxes, maps, groups, rule, corr)
    high = pairwise_iou(boxes) > rule.t_iou
    high &= groups[:, None] == groups[None]
    same = (groups[:, None] == groups[None]) if not rule.rule2_never else None
    removed = np.zeros(k, dtype=bool)

    def dup_matrix(rows: np.ndarray, c0: int, c1: int) -> np.ndarray:
        """Duplicate matrix of candidates ``rows`` vs columns ``c0:c1``."""
        r = torch.from_numpy(rows).to(boxes.device)
        hi = high[r, c0:c1]
        c = None
        if rule.needs_corr and corr is not None:
            c = corr[r, c0:c1].float().clamp_(0.0, 1.0)
        elif rule.needs_corr:
            # contiguous column slice: no gather of the (D-long) maps
            c = (maps[r] @ maps[c0:c1].T).clamp_(0.0, 1.0)
        d = rule.dup(hi, c)
        if same is not None:
            d &= same[r, c0:c1]
        return d.cpu().numpy()

    for s in range(0, k, _BLOCK):
        e = min(s + _BLOCK, k)
        blk = np.nonzero(~removed[s:e])[0] + s
        if blk.size == 0:
            continue
        d = dup_matrix(blk, s, e)[:, blk - s]
        kept = blk[_scan(np.triu(d, 1))]  # greedy inside the block
        keep[kept] = True
        if e == k:
            break
        c0 = e
        if rule.rule2_never:
            # only high-IoU pairs can be duplicates: skip if there are none
            cand = high[torch.from_numpy(kept).to(boxes.device),
                        e:].any(0).cpu().numpy()
            cand &= ~removed[e:]
            if not cand.any():
                continue
            c0 = e + int(np.argmax(cand))
        d = dup_matrix(kept, c0, k)
        removed[c0:] |= d.any(0)
    return keep


@MODELS.register_module()
class OdamNMS:
    """Odam-NMS post-processor (registered as ``OdamNMS`` in mmdet MODELS).

    Args:
        iou_threshold (float): ``T_iou`` in [0, 1]. Defaults to 0.5.
        corr_low (float): ``T_low`` in [0, 1]. Defaults to 0.2.
        corr_high (float): ``T_high`` in [corr_low, 1]. Defaults to 0.8.
        corr_type (str | CorrType): ``pearson`` (paper, default) or
            ``cosine`` (authors' code).
        max_num (int): keep at most this many (<= 0: all). Defaults to -1.
        class_agnostic (bool): ignore labels. Defaults to False.
        cuda_graph (bool): read by the ODAM dense heads, which compute the
            candidate maps for Odam-NMS: on a GPU, replay them as CUDA
            graphs captured per input size (same maps, a fraction of the
            kernel launches). Defaults to True.

    ``__call__(boxes (N,4), scores (N,), labels (N,), maps (N,D)|(N,H,W))``
    returns ``(dets (K,5), keep (K,))`` like ``mmcv.ops.batched_nms``.
    """

    def __init__(self,
                 iou_threshold: float = 0.5,
                 corr_low: float = 0.2,
                 corr_high: float = 0.8,
                 corr_type: Union[str, CorrType] = CorrType.PEARSON,
                 max_num: int = -1,
                 class_agnostic: bool = False,
                 cuda_graph: bool = True,
                 split_thr: Optional[float] = None):
        check_odam_nms_cfg(
            dict(iou_threshold=iou_threshold, corr_low=corr_low,
                 corr_high=corr_high, corr_type=corr_type, max_num=max_num,
                 class_agnostic=class_agnostic, cuda_graph=cuda_graph))
        self.iou_threshold = float(iou_threshold)
        self.corr_low = float(corr_low)
        self.corr_high = float(corr_high)
        self.corr_type = _as_corr_type(corr_type)
        self.max_num = int(max_num)
        self.class_agnostic = bool(class_agnostic)
        self.cuda_graph = bool(cuda_graph)
        self._rule = _Rule(self.iou_threshold, self.corr_low, self.corr_high)

    @classmethod
    def from_cfg(cls, nms_cfg: Dict) -> 'OdamNMS':
        """Build from a ``test_cfg.nms`` dict (validated)."""
        check_odam_nms_cfg(nms_cfg)
        cfg = {k: v for k, v in nms_cfg.items() if k != 'type'}
        return cls(**cfg)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(iou_threshold={self.iou_threshold}, '
                f'corr_low={self.corr_low}, corr_high={self.corr_high}, '
                f"corr_type='{self.corr_type.value}', max_num={self.max_num})")

    @staticmethod
    def _check_inputs(boxes: Tensor, scores: Tensor, maps: Tensor,
                      labels: Optional[Tensor]) -> None:
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f'boxes must be (N, 4), got {tuple(boxes.shape)}')
        n = boxes.shape[0]
        if scores.shape != (n, ):
            raise ValueError(f'scores must be ({n},), got '
                             f'{tuple(scores.shape)}')
        if maps.dim() < 1 or maps.shape[0] != n:
            raise ValueError(f'maps must have {n} rows (one per box), got '
                             f'{tuple(maps.shape)}')
        if labels is not None and labels.shape != (n, ):
            raise ValueError(f'labels must be ({n},), got '
                             f'{tuple(labels.shape)}')

    def keep_indices(self, boxes: Tensor, scores: Tensor,
                     labels: Optional[Tensor], maps: Optional[Tensor],
                     boxes_for_iou: Optional[Tensor] = None,
                     corr: Optional[Tensor] = None) -> Tensor:
        """Kept indices (K,) long, by descending score (no ``max_num``).

        ``corr`` (N, N), when given, replaces ``maps``: precomputed
        correlations (see :func:`map_correlation`), e.g. for sweeps.
        """
        if corr is not None:
            n = boxes.shape[0]
            if corr.shape != (n, n):
                raise ValueError(f'corr must be ({n}, {n}), got '
                                 f'{tuple(corr.shape)}')
            if maps is None:
                maps = corr
        self._check_inputs(boxes, scores, maps, labels)
        n = boxes.shape[0]
        device = boxes.device
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=device)
        # computed on the inputs' device; only boolean blocks go to the CPU.
        # Same sort call as mmcv's CPU kernel: identical tie order.
        order = scores.detach().sort(0, descending=True)[1]
        b = (boxes if boxes_for_iou is None else boxes_for_iou)
        b = b.detach().float()[order]
        if labels is None or self.class_agnostic:
            groups = torch.zeros(n, dtype=torch.long, device=device)
        else:
            groups = labels.detach().long()[order]
        z = None
        if corr is not None:
            c = corr.detach().to(device)[order][:, order]
            if c.numel() and not torch.isfinite(c).all():
                raise ValueError('corr contains NaN or Inf values')
            keep = _greedy_sorted(b, None, groups, self._rule, corr=c)
            return order.index_select(0, _as_index(keep, device))
        if self._rule.needs_corr:
            z = maps.detach().reshape(n, -1).to(device)[order]  # a new tensor
            if self.cuda_graph and z.is_cuda:
                keep = DUP_GRAPHS.run(b, z, groups, self._rule,
                                      self.corr_type)
                if keep is not None:
                    return order.index_select(0, _as_index(keep, device))
            z = normalize_maps(z, self.corr_type, inplace=True)
        elif maps.numel() and not (torch.isfinite(maps.amax()) and
                                   torch.isfinite(maps.amin())):
            raise ValueError('maps contain NaN or Inf values')
        keep = _greedy_sorted(b, z, groups, self._rule)
        return order.index_select(0, _as_index(keep, device))

    def __call__(self, boxes: Tensor, scores: Tensor, labels: Tensor,
                 maps: Optional[Tensor], corr: Optional[Tensor] = None
                 ) -> Tuple[Tensor, Tensor]:
        """Per-class Odam-NMS; returns ``(dets (K,5), keep (K,))``.

        ``corr`` (N, N) optionally replaces ``maps`` (precomputed).
        """
        if maps is None and corr is None:
            raise ValueError('either maps or corr must be given')
        self._check_inputs(boxes, scores, maps if maps is not None else corr,
                           labels)
        boxes_for_iou = None
        if not self.class_agnostic and boxes.shape[0] > 0:
            # mmcv's batched_nms offset trick, for bit-identical IoUs
            b = boxes.detach().float()
            max_coordinate = b.max()
            offsets = labels.to(b) * (max_coordinate + 1)  # same bits
            boxes_for_iou = b + offsets[:, None]
        keep = self.keep_indices(boxes, scores, labels, maps, boxes_for_iou,
                                 corr=corr)
        if self.max_num > 0:
            keep = keep[:self.max_num]
        dets = torch.cat([boxes[keep], scores[keep][:, None]], -1)
        return dets, keep


def odam_nms(boxes: Tensor,
             scores: Tensor,
             maps: Tensor,
             iou_threshold: float = 0.5,
             corr_low: float = 0.2,
             corr_high: float = 0.8,
             corr_type: Union[str, CorrType] = 'pearson') -> Tensor:
    """Single-class Odam-NMS.

    Args:
        boxes (Tensor): (N, 4) xyxy.
        scores (Tensor): (N,).
        maps (Tensor): (N, D) or (N, H, W) ODAM maps (any scale).
        iou_threshold, corr_low, corr_high (float): in [0, 1].
        corr_type (str | CorrType): ``pearson`` | ``cosine``.

    Returns:
        Tensor: kept indices (K,) long, by descending score. With
        ``corr_low=0, corr_high=1`` equal to ``mmcv.ops.nms(...)[1]``.
    """
    post = OdamNMS(iou_threshold, corr_low, corr_high, corr_type)
    return post.keep_indices(boxes, scores, None, maps)


def batched_odam_nms(boxes: Tensor, scores: Tensor, idxs: Tensor,
                     maps: Tensor, nms_cfg: Dict) -> Tuple[Tensor, Tensor]:
    """Per-class Odam-NMS with ``mmcv.ops.batched_nms``'s return format.

    Args:
        boxes (Tensor): (N, 4) xyxy.
        scores (Tensor): (N,).
        idxs (Tensor): (N,) class ids; only equal ids suppress each other.
        maps (Tensor): (N, D) or (N, H, W) ODAM maps.
        nms_cfg (dict): ``type='odam_nms'``, ``iou_threshold``, ``corr_low``,
            ``corr_high``, ``corr_type``, optional ``max_num`` (honoured),
            ``class_agnostic`` (honoured), ``split_thr`` (ignored: the loop
            is per class anyway).

    Returns:
        tuple: ``dets (K, 5)`` = (x1, y1, x2, y2, score) and ``keep (K,)``
        indices into the inputs, by descending score.
    """
    for observe in tuple(_OBSERVERS):
        observe(boxes, scores, idxs, maps)
    return OdamNMS.from_cfg(nms_cfg)(boxes, scores, idxs, maps)


#: callbacks of :func:`observe_odam_nms`, innermost last.
_OBSERVERS: List[Callable] = []


@contextmanager
def observe_odam_nms(callback: Callable) -> Iterator[None]:
    """Inside the ``with`` block, :func:`batched_odam_nms` first calls
    ``callback(boxes, scores, idxs, maps)`` with its inputs (every
    candidate of an image and their maps, before any suppression), e.g. to
    cache them for a threshold sweep. Removed on exit, also on error."""
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)
