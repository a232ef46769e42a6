"""AP, MR^-2 and JI of NMS and Odam-NMS with 95 % bootstrap intervals over
images, from the candidate cache of ``tools/analysis_tools/sweep_odam_nms.py``.

The detector runs once (the sweep tool caches every image's pre-NMS
candidates and their map correlations in ``OUT_DIR/cache.pth``); each
post-processing is applied once per image, and the CrowdHuman metrics are
recomputed on resampled sets of images::

    python tools/analysis_tools/sweep_odam_nms.py CONFIG CKPT \
        --out-dir OUT_DIR --corr-low 0.2 --corr-high 0.8
    python -m mmdet_odam.evaluation.nms_intervals CONFIG OUT_DIR/cache.pth \
        [--settings 0,1 0.2,0.8] [--n-boot 200] [--baseline-cache OTHER]

``(0, 1)`` is classic NMS (no correlation rule). Every later setting is
also reported as its difference from the first, paired by image (the
interval of the per-draw differences): a difference whose interval holds 0
is not an effect at this number of images. ``--baseline-cache`` (another
detector's cache on the same images, e.g. the twin trained without
Odam-Train) adds each setting's paired difference to that detector.
"""
import argparse
import copy
import functools
import json
import os.path as osp
import queue
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .functional.bootstrap import bootstrap_images

FIGURES = ('AP', 'MR', 'JI')


def post_process(images: Sequence[dict], iou_thr: float, corr_low: float,
                 corr_high: float, max_per_img: int = -1) -> List[dict]:
    """Odam-NMS (``(0, 1)``: NMS) on cached candidates -> data samples."""
    from mmdet_odam.nms.odam_nms import OdamNMS
    post = OdamNMS(iou_thr, corr_low, corr_high)
    samples = []
    for im in images:
        if im['boxes'].shape[0]:
            dets, _ = post(im['boxes'], im['scores'], im['labels'], None,
                           corr=im['corr'].float())
        else:
            dets = torch.zeros(0, 5)
        if max_per_img and max_per_img > 0:
            dets = dets[:max_per_img]
        samples.append(dict(
            img_id=im['img_id'], ori_shape=im['ori_shape'],
            pred_instances=dict(bboxes=dets[:, :4], scores=dets[:, 4])))
    return samples


def load_gt_records(ann_file: str) -> Dict[str, dict]:
    """CrowdHuman odgt lines by image ID."""
    with open(ann_file) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return {r['ID']: r for r in recs}


def without_ji_workers(metric):
    """``metric`` with a ``CrowdHumanMetric``'s JI computed in this process
    (:func:`eval_ji_in_process`; other metrics unchanged). Returns it."""
    from mmdet.evaluation.metrics import CrowdHumanMetric
    if isinstance(metric, CrowdHumanMetric):
        metric.eval_ji = functools.partial(eval_ji_in_process, metric)
    return metric


def eval_ji_in_process(metric, samples: dict) -> float:
    """``CrowdHumanMetric.eval_ji`` without its worker processes (it starts
    ``num_ji_process`` per score threshold, 100 per call by default, which
    would dominate a bootstrap's time): the same per-image figures at the
    same ten score thresholds, gathered in image order; the best JI."""
    best = []
    for i in range(10):
        results = queue.SimpleQueue()
        metric.compute_ji_with_ignore(results, samples, 1e-1 * i)
        best.append(metric.gather(
            [results.get_nowait() for _ in range(len(samples))])[1])
    return max(best)


def crowd_figures(samples: Sequence[dict], gt: Dict[str, dict],
                  metric_cfg: dict) -> np.ndarray:
    """(3,) AP, MR^-2 and JI (in %) of ``samples`` by ``CrowdHumanMetric``.

    ``CrowdHumanMetric`` pairs the lines of its annotation file with the
    results in order, so the images drawn (repeats included, each a
    separate image) are written to a temporary odgt file of their own under
    fresh IDs.
    """
    from mmdet.registry import METRICS
    with tempfile.TemporaryDirectory() as tmp:
        ann = osp.join(tmp, 'drawn.odgt')
        drawn = []
        with open(ann, 'w') as f:
            for k, s in enumerate(samples):
                rec = dict(gt[s['img_id']], ID=f'{s["img_id"]}#{k}')
                f.write(json.dumps(rec) + '\n')
                drawn.append(dict(s, img_id=rec['ID']))
        metric = without_ji_workers(METRICS.build(
            dict(copy.deepcopy(metric_cfg), ann_file=ann)))
        metric.process({}, drawn)
        res = metric.compute_metrics(metric.results)
    return 100 * np.array([res['mAP'], res['mMR'], res['JI']], dtype=float)


def nms_intervals(images: Sequence[dict], metric_cfg: dict, iou_thr: float,
                  settings: Sequence[Tuple[float, float]],
                  max_per_img: int = -1, n_boot: int = 200,
                  seed: int = 0,
                  baseline: Optional[Sequence[dict]] = None
                  ) -> Dict[str, dict]:
    """Per setting ``(corr_low, corr_high)``: each figure with its interval,
    and each later setting's difference from the first one, paired by
    image (the same resampled images for every setting, so the interval of
    a difference is the interval of the per-draw differences).

    ``baseline``: the cached candidates of another detector on the same
    images (same ``img_id`` order); each setting is then also reported on
    it and as the paired difference ``this - baseline``.

    Returns:
        dict: ``'lo,hi'`` (and ``'baseline lo,hi'``) -> {figure: [value,
        low, high]}; ``'a - b'`` -> the same for a paired difference; plus
        ``images``.
    """
    gt = load_gt_records(metric_cfg['ann_file'])
    keys = [f'{lo},{hi}' for lo, hi in settings]
    runs = {key: post_process(images, iou_thr, lo, hi, max_per_img)
            for key, (lo, hi) in zip(keys, settings)}
    diffs = [(key, keys[0]) for key in keys[1:]]
    if baseline is not None:
        _check_same_images(images, baseline)
        for key, (lo, hi) in zip(keys, settings):
            runs[f'baseline {key}'] = post_process(baseline, iou_thr, lo, hi,
                                                   max_per_img)
            diffs.append((key, f'baseline {key}'))
    names = list(runs)

    def stat(idx):
        figs = {n: crowd_figures([runs[n][i] for i in idx], gt, metric_cfg)
                for n in names}
        return np.concatenate([figs[n] for n in names] +
                              [figs[a] - figs[b] for a, b in diffs])

    v, low, high = bootstrap_images(stat, len(images), n_boot, seed=seed)
    k = len(FIGURES)
    rows = names + [f'{a} - {b}' for a, b in diffs]
    out = {row: {f: [float(v[j * k + i]), float(low[j * k + i]),
                     float(high[j * k + i])]
                 for i, f in enumerate(FIGURES)}
           for j, row in enumerate(rows)}
    out['images'] = len(images)
    return out


def _check_same_images(images: Sequence[dict], other: Sequence[dict]):
    ids, other_ids = ([im['img_id'] for im in x] for x in (images, other))
    if ids != other_ids:
        raise ValueError(
            f'the baseline cache holds other images ({len(other_ids)}, '
            f'first {other_ids[:3]}) than the cache ({len(ids)}, first '
            f'{ids[:3]}): run both sweeps on the same test set')


def _label(key: str) -> str:
    """``'0.0,1.0'`` -> ``'NMS'``; ``'0.2,0.8'`` -> ``'Odam-NMS (0.2,0.8)'``;
    ``'baseline ...'`` and differences ``'a - b'`` with their parts named."""
    if ' - ' in key:
        return ' - '.join(_label(part) for part in key.split(' - '))
    if key.startswith('baseline '):
        return 'baseline ' + _label(key[len('baseline '):])
    return 'NMS' if key == '0.0,1.0' else f'Odam-NMS ({key})'


def _crowd_metric_cfg(cfg) -> dict:
    evals = cfg.test_evaluator
    evals = [evals] if isinstance(evals, dict) else list(evals)
    for e in evals:
        if e.get('type') == 'CrowdHumanMetric':
            return dict(e)
    raise ValueError('the config has no CrowdHumanMetric in test_evaluator')


def _setting(text: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a setting is corr_low,corr_high (e.g. 0.2,0.8), got {text!r}')
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(
            f'need 0 <= corr_low <= corr_high <= 1, got {text!r}')
    return lo, hi


def main(argv=None) -> Dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='the Odam-NMS config of the sweep')
    p.add_argument('cache', help='cache.pth written by sweep_odam_nms.py')
    p.add_argument('--settings', type=_setting, nargs='+',
                   default=[(0., 1.), (0.2, 0.8)],
                   help='corr_low,corr_high pairs; 0,1 = classic NMS')
    p.add_argument('--baseline-cache', default=None,
                   help="another detector's cache.pth on the same images: "
                   'each setting also as the paired difference to it')
    p.add_argument('--n-boot', type=int, default=200)
    p.add_argument('--out', default=None, help='write results as JSON')
    args = p.parse_args(argv)
    from mmengine.config import Config

    from mmdet.utils import register_all_modules
    import mmdet_odam  # noqa: F401
    register_all_modules()
    cfg = Config.fromfile(args.config)
    head_cfg = cfg.model.get('test_cfg') or {}
    head_cfg = head_cfg.get('rcnn', head_cfg)
    iou_thr = head_cfg.get('nms', {}).get('iou_threshold', 0.5)
    cache = torch.load(args.cache, map_location='cpu', weights_only=True)
    baseline = None if args.baseline_cache is None else torch.load(
        args.baseline_cache, map_location='cpu', weights_only=True)['images']
    res = nms_intervals(cache['images'], _crowd_metric_cfg(cfg), iou_thr,
                        args.settings, head_cfg.get('max_per_img', -1),
                        args.n_boot, baseline=baseline)
    for key, figs in res.items():
        if key == 'images':
            continue
        sign = '+' if ' - ' in key else ''
        print(f'{_label(key):<20} ' + '  '.join(
            f'{f} {v:{sign}.2f} [{lo:{sign}.2f}, {hi:{sign}.2f}]'
            for f, (v, lo, hi) in figs.items()) +
            f'  ({res["images"]} images)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
