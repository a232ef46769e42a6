"""AP, MR^-2 and JI of NMS and Odam-NMS with 95 % bootstrap intervals over
images, from the candidate cache of ``tools/analysis_tools/sweep_odam_nms.py``.

The detector runs once (the sweep tool caches every image's pre-NMS
candidates and their map correlations in ``OUT_DIR/cache.pth``); each
post-processing is applied once per image, and the CrowdHuman metrics are
recomputed on resampled sets of images::

    python tools/analysis_tools/sweep_odam_nms.py CONFIG CKPT \
        --out-dir OUT_DIR --corr-low 0.2 --corr-high 0.8
    python -m mmdet_odam.evaluation.nms_intervals CONFIG OUT_DIR/cache.pth \
        [--settings 0,1 0.2,0.8] [--n-boot 200]

``(0, 1)`` is classic NMS (no correlation rule).
"""
import argparse
import copy
import json
import os.path as osp
import tempfile
from typing import Dict, List, Sequence, Tuple

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
        metric = METRICS.build(dict(copy.deepcopy(metric_cfg), ann_file=ann))
        metric.process({}, drawn)
        res = metric.compute_metrics(metric.results)
    return 100 * np.array([res['mAP'], res['mMR'], res['JI']], dtype=float)


def nms_intervals(images: Sequence[dict], metric_cfg: dict, iou_thr: float,
                  settings: Sequence[Tuple[float, float]],
                  max_per_img: int = -1, n_boot: int = 200,
                  seed: int = 0) -> Dict[str, dict]:
    """Per setting ``(corr_low, corr_high)``: each figure with its interval.

    All settings use the same resamples (same seed), so their intervals are
    comparable draw by draw.

    Returns:
        dict: ``'lo,hi'`` -> {figure: [value, low, high]}, plus ``images``.
    """
    gt = load_gt_records(metric_cfg['ann_file'])
    out = {}
    for lo, hi in settings:
        samples = post_process(images, iou_thr, lo, hi, max_per_img)
        v, low, high = bootstrap_images(
            lambda idx: crowd_figures([samples[i] for i in idx], gt,
                                      metric_cfg),
            len(samples), n_boot, seed=seed)
        out[f'{lo},{hi}'] = {
            f: [float(v[j]), float(low[j]), float(high[j])]
            for j, f in enumerate(FIGURES)}
    out['images'] = len(images)
    return out


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
    cache = torch.load(args.cache, map_location='cpu', weights_only=False)
    res = nms_intervals(cache['images'], _crowd_metric_cfg(cfg), iou_thr,
                        args.settings, head_cfg.get('max_per_img', -1),
                        args.n_boot)
    for key, figs in res.items():
        if key == 'images':
            continue
        name = 'NMS' if key == '0.0,1.0' else f'Odam-NMS ({key})'
        print(f'{name:<20} ' + '  '.join(
            f'{f} {v:.2f} [{lo:.2f}, {hi:.2f}]'
            for f, (v, lo, hi) in figs.items()) +
            f'  ({res["images"]} images)')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
