"""Object discrimination of trained dense detectors (paper Fig. 4, Tab. 3a),
with 95 % bootstrap intervals over images.

Per image: pre-NMS candidates with score > ``--score-thr`` (at most
``max_cands``, by score) are matched to the GT box they overlap most
(IoU >= 0.5); their ``cls`` ODAM maps (batched, no smoothing, on a grid of
the padded input / ``stride``) give

* ``corr_same``: Pearson correlation of the maps of two candidates of the
  same object (every pair);
* ``corr_diff``: the same for candidates of different objects whose boxes
  overlap with IoU > 0.5 (the pairs NMS must keep apart);
* ``odi_box``: ODI of each candidate's map w.r.t. its object's box;
* with ``--odam-loss``, ``loss_odam_con`` / ``loss_odam_sep``: the
  Odam-Train losses (paper defaults, weight 1) of each image, i.e. the
  training objective on held-out images (FCOS-like heads).

Example::

    python tools/analysis_tools/object_discrimination.py \
        --model base CONFIG_A CKPT_A --model odam CONFIG_B CKPT_B \
        --max-images 60 --out results.json
"""
import argparse
import json
import os
from typing import Dict, List, Optional

import torch
from torch import Tensor

from mmdet_odam.evaluation.discrimination import (KEYS, pair_values,
                                                  pearson_matrix)
from mmdet_odam.evaluation.functional.bootstrap import bootstrap_mean
from mmdet_odam.evaluation.functional.odi import odi_box
from mmdet_odam.utils.atomic import write_text_atomic

LOSS_KEYS = ('loss_odam_con', 'loss_odam_sep')


def _gt_boxes(sample) -> Tensor:
    gt = sample.gt_instances.bboxes
    gt = gt.tensor if hasattr(gt, 'tensor') else gt
    # the test pipelines load annotations after Resize: original pixels
    sx, sy = sample.metainfo.get('scale_factor', (1., 1.))
    return gt * gt.new_tensor([sx, sy, sx, sy])


def _candidates(head, cls_scores, bbox_preds, ctrs, score_thr, max_cands):
    """Level, location, score and box (input pixels) of image 0's
    candidates with score > ``score_thr``, the top ``max_cands``."""
    pts = head.prior_generator.grid_priors(
        [c.shape[-2:] for c in cls_scores], device=cls_scores[0].device)
    lv, loc, sc_all, boxes = [], [], [], []
    for lvl, (c, b, t) in enumerate(zip(cls_scores, bbox_preds, ctrs)):
        sc = (c[0, 0].sigmoid() * t[0, 0].sigmoid()).flatten()
        k = (sc > score_thr).nonzero().squeeze(1)
        d = b[0].flatten(1)[:, k].t()  # eval mode: distances in pixels
        lv.append(torch.full_like(k, lvl))
        loc.append(k)
        sc_all.append(sc[k])
        boxes.append(head.bbox_coder.decode(pts[lvl][k], d))
    lv, loc = torch.cat(lv), torch.cat(loc)
    sc_all, boxes = torch.cat(sc_all), torch.cat(boxes)
    order = sc_all.argsort(descending=True)[:max_cands]
    return lv[order], loc[order], boxes[order]


def image_discrimination(model, data, score_thr: float = 0.1,
                         max_cands: int = 100,
                         stride: int = 8) -> Optional[Dict[str, Tensor]]:
    """Pair correlations and ODIs of one image (batch of one).

    Returns:
        dict | None: ``corr_same`` / ``corr_diff`` (pairs) and ``odi_box``
        (candidates) as 1-D tensors; None when the image has < 2 GT objects
        or < 2 matched candidates.
    """
    from mmdet.structures.bbox import bbox_overlaps

    from mmdet_odam.core import Candidates
    from mmdet_odam.explainers.dense import dense_candidate_maps
    from mmdet_odam.explainers.targets import MapOptions
    data = model.data_preprocessor(data, False)
    sample = data['data_samples'][0]
    gt = _gt_boxes(sample)
    if len(gt) < 2:
        return None
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        outs = head(feats)
    lv, loc, boxes = _candidates(head, *outs, score_thr, max_cands)
    if len(lv) < 2:
        return None
    best, obj = bbox_overlaps(boxes, gt).max(1)
    ok = best >= 0.5
    lv, loc, boxes, obj = lv[ok], loc[ok], boxes[ok], obj[ok]
    if len(obj) < 2:
        return None
    pad = sample.metainfo['batch_input_shape']
    maps = dense_candidate_maps(
        head, feats, Candidates.of_image(lv, loc, torch.zeros_like(lv)),
        out_size=(pad[0] // stride, pad[1] // stride),
        options=MapOptions(smoothing='none')).detach()
    out = pair_values(pearson_matrix(maps.flatten(1)), obj,
                      bbox_overlaps(boxes, boxes))
    out['odi_box'] = torch.tensor(
        [odi_box(maps[j], gt / stride, int(obj[j])) for j in range(len(obj))])
    return out


def loss_model(config: str, checkpoint: str, device: str = 'cpu'):
    """The detector of ``config`` with an ``OdamFCOSHead`` computing the
    Odam-Train losses (paper defaults), in training mode (FCOS's
    training-mode outputs; the backbone's frozen BN stays frozen)."""
    from mmdet.apis import init_detector
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.type = 'OdamFCOSHead'
    cfg.model.bbox_head.loss_odam = dict(type='OdamTrainLoss')
    model = init_detector(cfg, checkpoint, device=device)
    return model.train()


def image_odam_losses(model, data) -> Optional[Dict[str, Tensor]]:
    """(1,) ``loss_odam_con`` / ``loss_odam_sep`` of one image (batch of
    one) under :func:`loss_model`; None when it has < 2 GT objects."""
    data = model.data_preprocessor(data, False)
    sample = data['data_samples'][0]
    if len(sample.gt_instances) < 2:
        return None
    sample.gt_instances.bboxes = _gt_boxes(sample)
    losses = model.loss(data['inputs'], data['data_samples'])
    return {k: losses[k].detach().reshape(1) for k in LOSS_KEYS}


def discrimination(model, dataset, max_images: Optional[int] = None,
                   score_thr: float = 0.1, n_boot: int = 2000,
                   seed: int = 0, losses=None) -> Dict[str, dict]:
    """:func:`image_discrimination` over a dataset, with intervals.

    Args:
        losses (nn.Module, optional): a :func:`loss_model`; its
            :func:`image_odam_losses` are added (keys ``LOSS_KEYS``).

    Returns:
        dict: key -> ``Interval._asdict()`` (mean, 95 % interval over
        images, numbers of pairs / candidates and images), plus
        ``images`` (images evaluated).
    """
    from mmengine.dataset import pseudo_collate
    from mmengine.utils import ProgressBar
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    keys = KEYS + (LOSS_KEYS if losses is not None else ())
    vals: Dict[str, List[float]] = {k: [] for k in keys}
    ids: Dict[str, List[int]] = {k: [] for k in keys}
    bar = ProgressBar(n)
    for i in range(n):
        data = pseudo_collate([dataset[i]])
        res = image_discrimination(model, data, score_thr) or {}
        if losses is not None:
            res.update(image_odam_losses(losses, data) or {})
        for k, v in res.items():
            vals[k] += v.tolist()
            ids[k] += [i] * len(v)
        bar.update()
    out = {k: bootstrap_mean(vals[k], ids[k], n_boot, seed=seed)._asdict()
           for k in keys}
    out['images'] = n
    return out


def format_results(name: str, res: Dict[str, dict]) -> str:
    """One line per figure: value [95 % interval] (pairs / candidates,
    images)."""
    lines = [f'{name} ({res["images"]} images evaluated)']
    for k in KEYS + LOSS_KEYS:
        if k not in res:
            continue
        r = res[k]
        unit = dict(odi_box='candidates', corr_same='pairs',
                    corr_diff='pairs').get(k)
        count = (f'{r["n_objects"]} {unit}, ' if unit else '')
        lines.append(f'  {k:<13} {r["value"]:.4f} [{r["low"]:.4f}, '
                     f'{r["high"]:.4f}] ({count}{r["n_images"]} images)')
    return '\n'.join(lines)


def build_model_and_data(config: str, checkpoint: str, device: str = 'cpu'):
    """Detector (weights of ``checkpoint``) and its config's test set."""
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    import mmdet_odam  # noqa: F401
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    model = init_detector(cfg, checkpoint, device=device)
    return model, DATASETS.build(cfg.test_dataloader.dataset)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Object discrimination (same / different object map '
        'correlation, ODI) with 95 % bootstrap intervals over images')
    p.add_argument('--model', nargs=3, action='append', required=True,
                   metavar=('NAME', 'CONFIG', 'CHECKPOINT'),
                   help='a detector to evaluate (repeat to compare)')
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--score-thr', type=float, default=0.1)
    p.add_argument('--n-boot', type=int, default=2000)
    p.add_argument('--device', default='cpu')
    p.add_argument('--odam-loss', action='store_true',
                   help='also report the Odam-Train losses of each image '
                   '(FCOS-like heads)')
    p.add_argument('--out', default=None,
                   help='write results as JSON (after every model)')
    return p.parse_args(argv)


def main(argv=None) -> Dict[str, dict]:
    args = parse_args(argv)
    specs = [tuple(m) for m in args.model]
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f'--model names must differ, got {names}')
    for name, config, ckpt in specs:
        for what, path in (('config', config), ('checkpoint', ckpt)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f'{what} of {name!r} not found: {path}')
    res = {}
    for name, config, ckpt in specs:
        model, dataset = build_model_and_data(config, ckpt, args.device)
        losses = (loss_model(config, ckpt, args.device)
                  if args.odam_loss else None)
        res[name] = discrimination(model, dataset, args.max_images,
                                   args.score_thr, args.n_boot,
                                   losses=losses)
        print('\n' + format_results(name, res[name]), flush=True)
        if args.out:  # what is finished is kept
            write_text_atomic(args.out, json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
