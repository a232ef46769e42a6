"""D-RISE baseline (Petsiuk et al., CVPR 2021): black-box saliency of a
detection from randomly masked inputs.

``drise_saliency`` is the pure part (any ``detect_fn``); ``DRISEExplainer``
wraps an mmdet detector behind the same ``explain`` API as ODAM.

How the weighted masks become a map (``normalize``). With masks M_i and
weights w_i (i = 1..N):

- D-RISE (CVPR 2021) uses the weighted sum H = sum_i w_i M_i.
- RISE (Petsiuk et al., BMVC 2018) estimates the expected score given that
  a pixel is kept, S = sum_i w_i M_i / (N E[M]), E[M] = p: the same map as
  D-RISE's up to a constant, so the same after min-max normalisation.

Both keep the term w_mean * sum_i M_i: where the random masks happen to
keep more pixels the map is higher, whatever the detector does. Detection
weights are rarely near 0 (a masked object is often still detected), so
this coverage term dominates at small N. ``'coverage'`` (default) divides
by the per-pixel coverage instead of its expectation,
S = sum_i w_i M_i / sum_i M_i = w_mean + sum_i (w_i - w_mean) M_i / sum_i M_i
(the self-normalised estimate of RISE's expectation, as xaitk-saliency's
``DRISEScoring``): constant weights give a constant map. ``'raw'`` is the
D-RISE sum (older results of this package).
"""
import hashlib
import math
import os
import os.path as osp
from enum import Enum
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import box_iou, minmax_normalize
from ..utils.options import parse_enum
from .base import BaseExplainer
from .builder import EXPLAINERS
from .results import Explanation
from .targets import Target

#: detect_fn(masks (B, 1, H, W) in [0, 1]) -> per masked image
#: (bboxes (M, 4) xyxy, scores (M,), labels (M,))
DetectFn = Callable[[Tensor], List[Tuple[Tensor, Tensor, Tensor]]]


class DRISENormalize(str, Enum):
    """How D-RISE turns the weighted masks into a map (module doc):
    ``coverage`` (default) = sum_i w_i M_i / sum_i M_i per pixel,
    ``raw`` = sum_i w_i M_i (the D-RISE paper's sum)."""
    COVERAGE = 'coverage'
    RAW = 'raw'


def parse_drise_normalize(
        value: Union[str, DRISENormalize]) -> DRISENormalize:
    """Parse ``normalize``; raises ``ValueError`` listing valid names."""
    return parse_enum(DRISENormalize, value, 'D-RISE normalize')


def generate_masks(n: int, size: Tuple[int, int], cells: int = 16,
                   p: float = 0.5,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """RISE masks: an s x s binary grid (keep with probability ``p``),
    bilinearly upsampled to (s+1) cells and randomly shifted by less than
    one cell, cropped to ``size``. Returns (n, 1, H, W) in [0, 1]."""
    h, w = int(size[0]), int(size[1])
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    grid = (torch.rand(n, 1, cells, cells, generator=generator) <
            p).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw),
                       mode='bilinear', align_corners=False)
    dy = torch.randint(0, ch, (n, ), generator=generator)
    dx = torch.randint(0, cw, (n, ), generator=generator)
    return torch.stack([
        up[i, :, int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w]
        for i in range(n)
    ])


def drise_weights(dets: Sequence[Tuple[Tensor, Tensor, Tensor]],
                  target_boxes: Tensor, target_labels: Tensor) -> Tensor:
    """Weight of each masked image for each target: the max over its
    detections of IoU x class similarity x objectness. mmdet detectors return
    one label and score per detection, so class similarity is 1[same label]
    and the objectness is the detection score.

    Returns:
        Tensor: (B, K).
    """
    out = torch.zeros(len(dets), len(target_boxes))
    for i, (boxes, scores, labels) in enumerate(dets):
        if len(boxes) == 0:
            continue
        iou = box_iou(boxes.float().cpu(), target_boxes)  # (M, K)
        same = labels.cpu().reshape(-1, 1) == target_labels.reshape(1, -1)
        sim = iou * same * scores.float().cpu().reshape(-1, 1)
        out[i] = sim.max(0).values
    return out


def finish_saliency(wsum: Tensor, coverage: Tensor, wtotal: Tensor,
                    n_masks: int,
                    normalize: Union[str, DRISENormalize]) -> Tensor:
    """Map from the accumulated sums of N masks.

    Args:
        wsum (Tensor): (K, H, W) sum_i w_i M_i.
        coverage (Tensor): (H, W) sum_i M_i.
        wtotal (Tensor): (K,) sum_i w_i.
        n_masks (int): N.
        normalize: ``'coverage'`` or ``'raw'`` (see :class:`DRISENormalize`).

    Returns:
        Tensor: (K, H, W) float32; ``coverage``: sum_i w_i M_i / sum_i M_i,
        and the mean weight where no mask kept the pixel (no evidence
        either way). A map flat up to rounding (range <= 1e-6 x its largest
        value) is returned exactly flat, so min-max normalisation does not
        stretch rounding noise into a pattern.
    """
    if parse_drise_normalize(normalize) == DRISENormalize.RAW:
        sal = wsum
    else:
        mean = (wtotal / n_masks).reshape(-1, 1, 1).expand_as(wsum)
        sal = torch.where(coverage > 0, wsum / coverage.clamp(min=1e-12),
                          mean.to(wsum))
    return _flatten_rounding(sal).float()


def _flatten_rounding(sal: Tensor, rel: float = 1e-6) -> Tensor:
    """(K, H, W) maps whose range is <= ``rel`` x their largest magnitude
    replaced by their mean."""
    if sal.numel() == 0:
        return sal
    flat = sal.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    tiny = (hi - lo) <= rel * torch.maximum(hi.abs(), lo.abs())
    return torch.where(tiny.reshape(-1, 1, 1),
                       flat.mean(1).reshape(-1, 1, 1).expand_as(sal), sal)


def _load_state(checkpoint: Optional[str], key: dict):
    """Saved sums of an interrupted run with the same ``key``, or None."""
    if not checkpoint or not osp.isfile(checkpoint):
        return None
    state = torch.load(checkpoint, weights_only=True)
    if state.get('key') != key or 'coverage' not in state:
        return None  # other settings, or a file of an older version
    return state


def _save_state(checkpoint: str, state: dict):
    tmp = checkpoint + '.tmp'
    torch.save(state, tmp)
    os.replace(tmp, checkpoint)


def drise_saliency(detect_fn: DetectFn,
                   size: Tuple[int, int],
                   target_boxes: Tensor,
                   target_labels: Tensor,
                   n_masks: int = 5000,
                   cells: int = 16,
                   p: float = 0.5,
                   chunk_size: int = 32,
                   seed: int = 0,
                   checkpoint: Optional[str] = None,
                   progress: bool = False,
                   normalize: Union[str, DRISENormalize] = 'coverage'
                   ) -> Tensor:
    """D-RISE saliency of K target detections.

    Args:
        detect_fn (callable): masks -> detections (see ``DetectFn``); one call
            per chunk of masks (one batched forward).
        size (tuple): (H, W) of the masks (the network-input image).
        target_boxes (Tensor): (K, 4) xyxy in the same pixels.
        target_labels (Tensor): (K,) labels.
        n_masks (int): number of masks N.
        cells (int): grid resolution s (s x s cells).
        p (float): keep probability of a cell.
        chunk_size (int): masks per forward (bounds memory).
        seed (int): seed of the mask generator.
        checkpoint (str, optional): file holding the partial sums and the
            generator state after each chunk; an interrupted run resumes from
            it (same result as an uninterrupted run). Removed when done.
        progress (bool): show an mmengine progress bar.
        normalize (str): ``'coverage'`` (default): sum_i w_i M_i /
            sum_i M_i per pixel; ``'raw'``: sum_i w_i M_i (module doc).

    Returns:
        Tensor: (K, H, W) float32 saliency (>= 0; the sums are kept in
        float64).
    """
    normalize = parse_drise_normalize(normalize)
    if n_masks < 1 or chunk_size < 1 or cells < 1:
        raise ValueError('n_masks, chunk_size and cells must be >= 1')
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p}')
    target_boxes = torch.as_tensor(target_boxes).float().reshape(-1, 4).cpu()
    target_labels = torch.as_tensor(target_labels).long().reshape(-1).cpu()
    h, w = int(size[0]), int(size[1])
    key = dict(n_masks=int(n_masks), cells=int(cells), p=float(p),
               seed=int(seed), size=(h, w),
               boxes=target_boxes.tolist(), labels=target_labels.tolist())
    gen = torch.Generator().manual_seed(int(seed))
    k = len(target_boxes)
    state = _load_state(checkpoint, key) or dict(
        key=key, wsum=torch.zeros(k, h, w, dtype=torch.float64),
        coverage=torch.zeros(h, w, dtype=torch.float64),
        wtotal=torch.zeros(k, dtype=torch.float64), done=0)
    if 'rng' in state:
        gen.set_state(state['rng'])
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(n_masks)
        bar.completed = state['done']
    while state['done'] < n_masks:
        n = min(chunk_size, n_masks - state['done'])
        masks = generate_masks(n, (h, w), cells, p, gen)
        weights = drise_weights(detect_fn(masks), target_boxes,
                                target_labels).double()  # (n, K)
        masks = masks[:, 0].double()
        state['wsum'] += torch.einsum('nk,nhw->khw', weights, masks)
        state['coverage'] += masks.sum(0)
        state['wtotal'] += weights.sum(0)
        state['done'] += n
        state['rng'] = gen.get_state()
        if checkpoint:
            _save_state(checkpoint, state)
        if bar is not None:
            for _ in range(n):
                bar.update()
    if checkpoint and osp.isfile(checkpoint):
        os.remove(checkpoint)
    return finish_saliency(state['wsum'], state['coverage'], state['wtotal'],
                           n_masks, normalize)


@EXPLAINERS.register_module(name='drise')
class DRISEExplainer(BaseExplainer):
    """D-RISE for any mmdet detector (black box: only ``model.predict``).

    Args:
        model: mmdet detector.
        n_masks (int): masks per image (default 5000 as in the paper).
        cells (int): grid resolution (16).
        p (float): keep probability (0.5).
        chunk_size (int): masked images per forward.
        seed (int): mask seed.
        resume_dir (str, optional): folder of per-image checkpoints (resume).
        progress (bool): progress bar.
        normalize (str): ``'coverage'`` (default, map = sum_i w_i M_i /
            sum_i M_i per pixel) or ``'raw'`` (sum_i w_i M_i, older results);
            see the module doc.
    """
    method = 'drise'

    def __init__(self, model, targets=('cls', ), n_masks: int = 5000,
                 cells: int = 16, p: float = 0.5, chunk_size: int = 16,
                 seed: int = 0, resume_dir: Optional[str] = None,
                 progress: bool = False, normalize: str = 'coverage',
                 **kwargs):
        self.normalize = parse_drise_normalize(normalize)
        kwargs.pop('smoothing', None)
        kwargs.pop('grad_mode', None)
        super().__init__(model, targets=targets, chunk_size=chunk_size,
                         **kwargs)
        if not set(self.targets) <= {Target.CLS, Target.COMBINED}:
            raise ValueError('D-RISE explains the whole detection; only '
                             "target 'cls' (or 'combined', the same map) is "
                             'supported')
        self.n_masks, self.cells, self.p = int(n_masks), int(cells), float(p)
        self.seed, self.resume_dir, self.progress = seed, resume_dir, progress

    def _detect(self, inputs: Tensor, data_sample) -> Tuple[Tensor, ...]:
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=data_sample.metainfo)
                   for _ in range(len(inputs))]
        res = self.model.predict(inputs, samples, rescale=False)
        return [(r.pred_instances.bboxes, r.pred_instances.scores,
                 r.pred_instances.labels) for r in res]

    def _black(self, x: Tensor) -> Tensor:
        """Value of a black pixel after the data preprocessor."""
        pre = getattr(self.model, 'data_preprocessor', None)
        if pre is not None and getattr(pre, '_enable_normalize', False):
            return (-pre.mean / pre.std).reshape(-1, 1, 1).to(x)
        return torch.zeros(x.shape[0], 1, 1).to(x)

    @torch.no_grad()
    def _explain(self, inputs, data_samples, hooks, score_thr, topk, boxes,
                 labels) -> List[Explanation]:
        out = []
        for b, ds in enumerate(data_samples):
            meta = ds.metainfo
            x = inputs[b:b + 1]
            ih, iw = [int(v) for v in meta.get('img_shape', x.shape[-2:])]
            oh, ow = [int(v) for v in meta.get('ori_shape', (ih, iw))]
            sf = torch.as_tensor(meta.get('scale_factor', (1.0, 1.0)),
                                 dtype=torch.float32).reshape(-1)[:2]
            sf4 = sf.repeat(2)
            det_b, det_s, det_l = [t.cpu() for t in self._detect(x, ds)[0]]
            if boxes is None:
                keep = (det_s >= score_thr).nonzero().reshape(-1)
                keep = keep[det_s[keep].argsort(descending=True)][:topk]
                tb, ts, tl = det_b[keep], det_s[keep], det_l[keep]
                inds = keep
            else:
                tb = torch.as_tensor(boxes[b]).float().reshape(-1, 4) * sf4
                iou = box_iou(tb, det_b)
                if labels is not None:
                    tl = torch.as_tensor(labels[b]).long().reshape(-1)
                    iou = iou * (tl[:, None] == det_l[None, :])
                if det_b.numel():
                    inds = iou.argmax(1)
                    ts = det_s[inds] * (iou.max(1).values > 0)
                    if labels is None:
                        tl = det_l[inds]
                else:
                    inds = torch.full((len(tb), ), -1, dtype=torch.long)
                    ts = torch.zeros(len(tb))
                    if labels is None:
                        tl = torch.zeros(len(tb), dtype=torch.long)
            if len(tb) == 0:
                out.append(Explanation.empty(
                    self.targets, (oh, ow), img_path=meta.get('img_path'),
                    method=self.method, layer='input'))
                continue
            black = self._black(x[0])

            def detect_fn(masks, x=x, ds=ds, black=black):
                m = masks.to(x)
                xm = x.repeat(len(m), 1, 1, 1)
                xm[:, :, :ih, :iw] = black + (xm[:, :, :ih, :iw] - black) * m
                return self._detect(xm, ds)

            ckpt = None
            if self.resume_dir:
                os.makedirs(self.resume_dir, exist_ok=True)
                tag = hashlib.sha1(repr((meta.get('img_path'), tb.tolist(),
                                         self.n_masks, self.seed)).encode()
                                   ).hexdigest()[:16]
                ckpt = osp.join(self.resume_dir, f'drise_{tag}.pth')
            sal = drise_saliency(detect_fn, (ih, iw), tb, tl, self.n_masks,
                                 self.cells, self.p, self.chunk_size,
                                 self.seed, ckpt, self.progress,
                                 self.normalize)
            sal = _flatten_rounding(F.interpolate(
                sal[None], size=(oh, ow), mode='bilinear',
                align_corners=False)[0])
            out.append(Explanation(
                bboxes=tb / sf4, scores=ts.float(), labels=tl.long(),
                candidate_inds=inds.long(),
                maps={t.value: minmax_normalize(sal) for t in self.targets},
                img_path=meta.get('img_path'), ori_shape=(oh, ow),
                method=self.method, layer='input'))
        return out
