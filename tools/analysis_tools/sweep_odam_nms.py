# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Sweep the Odam-NMS correlation thresholds (paper App. A.4.1, Fig. 9).

Runs the detector of an Odam-NMS config (``test_cfg.nms.type='odam_nms'``,
dense heads or ``OdamStandardRoIHead``) once over the test set, caching for
every image its pre-NMS candidates (boxes, scores, labels) and the pairwise
correlations of their ODAM ``cls`` maps, then re-runs Odam-NMS for each
``(corr_low, corr_high)`` pair (plus classic NMS = ``(0, 1)``) and evaluates
it with the config's CrowdHuman metrics (AP, MR^-2, JI; crowd/sparse recall
when ``CrowdRecallMetric`` is in ``test_evaluator``).

Outputs (``--out-dir``, default ``work_dirs/sweep_odam_nms``): the printed
tables, ``sweep.json``, ``sweep.csv`` and ``sweep.png`` (AP, MR, JI vs
``corr_low`` per ``corr_high``; the star is classic NMS). The candidate
cache (``cache.pth``) is reused by later runs with the same config,
checkpoint and correlation type (``--no-cache`` to ignore it).

Example::

    python tools/analysis_tools/sweep_odam_nms.py \
        configs/odam_nms/fcos_mobilenetv2_crowd-scenes_odam-nms.py \
        checkpoints/fcos_mobilenetv2_crowd-person.pth \
        --corr-low 0 0.1 0.2 0.3 0.4 --corr-high 0.6 0.7 0.8 0.9 1.0
"""
import argparse
import copy
import csv
import json
import os
import os.path as osp
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mmdet_odam  # noqa: E402,F401
from mmdet_odam.evaluation.nms_intervals import \
    without_ji_workers  # noqa: E402
from mmdet_odam.nms.odam_nms import (CorrType, OdamNMS,  # noqa: E402
                                     check_odam_nms_cfg, map_correlation,
                                     observe_odam_nms)

CACHE_VERSION = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Odam-NMS (corr_low, corr_high) sweep (paper Fig. 9)')
    p.add_argument('config', help='config with test_cfg nms type odam_nms')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--corr-low', type=float, nargs='+',
                   default=[0.0, 0.1, 0.2, 0.3, 0.4])
    p.add_argument('--corr-high', type=float, nargs='+',
                   default=[0.6, 0.7, 0.8, 0.9, 1.0])
    p.add_argument('--iou-threshold', type=float, default=None,
                   help="default: the config's")
    p.add_argument('--corr-type', choices=[c.value for c in CorrType],
                   default=None, help="default: the config's")
    p.add_argument('--num-images', type=int, default=None,
                   help='only the first N test images')
    p.add_argument('--out-dir', default='work_dirs/sweep_odam_nms')
    p.add_argument('--no-cache', action='store_true')
    p.add_argument('--cfg-options', nargs='+', default=None,
                   help='key=value overrides (mmengine DictAction syntax)')
    return p.parse_args(argv)


def _nms_cfg_of(cfg):
    """(container dict holding ``nms``, ``max_per_img``) of the config."""
    tc = cfg.model.get('test_cfg', None)
    if tc is None:
        raise ValueError('config has no model.test_cfg')
    holder = tc.rcnn if 'rcnn' in tc else tc
    nms = holder.get('nms', None)
    if nms is None or nms.get('type') != 'odam_nms':
        raise ValueError(
            "the config's test_cfg nms must be dict(type='odam_nms', ...) "
            f'to compute ODAM maps, got {nms}')
    check_odam_nms_cfg(dict(nms))
    return holder


def _atomic_save(obj, path, save_fn):
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix='.tmp')
    os.close(fd)
    try:
        save_fn(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _compact(corr):
    """float32 correlations; float16 for very large candidate sets."""
    return corr.half() if corr.numel() > 1500 * 1500 else corr


def collect_candidates(cfg, checkpoint, corr_type, num_images=None):
    """Run the model once; per image: candidates + correlation matrix."""
    from mmengine.runner import Runner, load_checkpoint
    from mmengine.utils import ProgressBar
    cfg = copy.deepcopy(cfg)
    cfg.test_dataloader.batch_size = 1
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.work_dir = cfg.get('work_dir', None) or tempfile.mkdtemp()
    cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    model = runner.model
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    loader = runner.test_dataloader
    captured = []

    def capture(boxes, scores, idxs, maps):
        m = maps.detach().cpu()
        # both correlation types: a later sweep of the other type reuses it
        corrs = {t.value: _compact(map_correlation(m, corr_type=t))
                 for t in CorrType}
        captured.append(dict(
            boxes=boxes.detach().float().cpu(),
            scores=scores.detach().float().cpu(),
            labels=idxs.detach().cpu(), corr=corrs[corr_type],
            corr_all=corrs))

    total = len(loader.dataset) if num_images is None else min(
        num_images, len(loader.dataset))
    images = []
    bar = ProgressBar(total)
    with observe_odam_nms(capture):
        for data in loader:
            if len(images) >= total:
                break
            captured.clear()
            with torch.no_grad():
                outs = model.test_step(data)
            out = outs[0]
            cand = captured[0] if captured else dict(
                boxes=torch.zeros(0, 4), scores=torch.zeros(0),
                labels=torch.zeros(0, dtype=torch.long),
                corr=torch.zeros(0, 0),
                corr_all={t.value: torch.zeros(0, 0) for t in CorrType})
            cand.update(img_id=out.img_id, ori_shape=tuple(out.ori_shape))
            images.append(cand)
            bar.update()
    print()
    return images


def evaluate(images, evaluator_cfgs, iou_thr, corr_low, corr_high,
             max_per_img):
    """Odam-NMS with the given thresholds on cached candidates -> metrics."""
    from mmdet.registry import METRICS
    post = OdamNMS(iou_thr, corr_low, corr_high)
    samples = []
    for im in images:
        if im['boxes'].shape[0]:
            dets, _ = post(im['boxes'], im['scores'], im['labels'], None,
                           corr=im['corr'])
        else:
            dets = torch.zeros(0, 5)
        if max_per_img and max_per_img > 0:
            dets = dets[:max_per_img]
        samples.append(dict(
            img_id=im['img_id'], ori_shape=im['ori_shape'],
            pred_instances=dict(bboxes=dets[:, :4], scores=dets[:, 4])))
    metrics = {}
    for ecfg in evaluator_cfgs:
        metric = without_ji_workers(METRICS.build(copy.deepcopy(ecfg)))
        metric.process({}, samples)
        res = metric.compute_metrics(metric.results)
        prefix = metric.prefix or type(metric).__name__
        metrics.update({f'{prefix}/{k}': float(v) for k, v in res.items()})
    return metrics


def _pick(m, *names):
    for n in names:
        if n in m:
            return m[n]
    return float('nan')


def summarize(m):
    return dict(
        AP=_pick(m, 'crowd_human/mAP'), MR=_pick(m, 'crowd_human/mMR'),
        JI=_pick(m, 'crowd_human/JI', 'crowd_recall/JI'),
        recall_crowd=_pick(m, 'crowd_recall/recall_crowd'),
        recall_sparse=_pick(m, 'crowd_recall/recall_sparse'),
        recall=_pick(m, 'crowd_recall/recall'))


def format_tables(rows, lows, highs, classic):
    """Fig. 9 as text: one corr_low x corr_high table per metric."""
    lines = []
    for key, better in (('AP', 'higher'), ('MR', 'lower'), ('JI', 'higher'),
                        ('recall_crowd', 'higher')):
        lines.append(f'{key} ({better} is better; classic NMS '
                     f'{classic[key] * 100:.2f})')
        lines.append('corr_low \\ corr_high ' +
                     ' '.join(f'{h:>7.2f}' for h in highs))
        for lo in lows:
            vals = []
            for hi in highs:
                r = rows.get((lo, hi))
                vals.append('      -' if r is None else
                            f'{r[key] * 100:7.2f}')
            lines.append(f'{lo:>20.2f} ' + ' '.join(vals))
        lines.append('')
    return '\n'.join(lines)


def plot(rows, lows, highs, classic, path):
    """AP / MR / JI vs corr_low, one line per corr_high (Fig. 9)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_cv2(rows, lows, highs, classic, path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, ('AP', 'MR', 'JI')):
        for hi in highs:
            xs = [lo for lo in lows if (lo, hi) in rows]
            ax.plot(xs, [rows[(lo, hi)][key] * 100 for lo in xs],
                    marker='o', label=f'T_high={hi:g}')
        ax.plot([0.0], [classic[key] * 100], marker='*', color='k',
                markersize=14, linestyle='none', label='NMS')
        ax.set_xlabel('T_low (corr_low)')
        ax.set_title(key + (' (lower is better)' if key == 'MR' else ''))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _atomic_save(fig, path, lambda f, p: f.savefig(p, dpi=120,
                                                   format='png'))
    plt.close(fig)


def _plot_cv2(rows, lows, highs, classic, path):
    import cv2
    h, w, pad = 300, 360, 40
    canvas = np.full((h, 3 * w, 3), 255, np.uint8)
    colors = [(200, 0, 0), (0, 150, 0), (0, 0, 200), (150, 0, 150),
              (0, 150, 150), (100, 100, 0)]
    for p, key in enumerate(('AP', 'MR', 'JI')):
        vals = [r[key] for r in rows.values()] + [classic[key]]
        lo_v, hi_v = min(vals), max(vals) + 1e-9
        x0 = p * w

        def pt(x, y):
            xx = x0 + pad + (x - min(lows)) / (max(lows) - min(lows) + 1e-9) \
                * (w - 2 * pad)
            yy = h - pad - (y - lo_v) / (hi_v - lo_v) * (h - 2 * pad)
            return int(xx), int(yy)

        cv2.putText(canvas, key, (x0 + pad, 25), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, (0, 0, 0), 1)
        for i, hi in enumerate(highs):
            xs = [lo for lo in lows if (lo, hi) in rows]
            pts = [pt(lo, rows[(lo, hi)][key]) for lo in xs]
            for a, b in zip(pts[:-1], pts[1:]):
                cv2.line(canvas, a, b, colors[i % len(colors)], 2)
        cv2.drawMarker(canvas, pt(0.0, classic[key]), (0, 0, 0),
                       cv2.MARKER_STAR, 14, 2)
    _atomic_save(canvas, path, lambda img, p: cv2.imwrite(p + '.png', img)
                 and os.replace(p + '.png', p))


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config, DictAction

    from mmdet.utils import register_all_modules
    register_all_modules()
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config {args.config} does not exist')
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(
            f'checkpoint {args.checkpoint} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(
            ['--o', *args.cfg_options]).o)
    holder = _nms_cfg_of(cfg)
    nms = dict(holder.nms)
    iou_thr = nms.get('iou_threshold', 0.5) if args.iou_threshold is None \
        else args.iou_threshold
    corr_type = args.corr_type or nms.get('corr_type', 'pearson')
    for v in args.corr_low + args.corr_high + [iou_thr]:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f'thresholds must be in [0, 1], got {v}')
    max_per_img = holder.get('max_per_img', -1)
    evaluators = cfg.test_evaluator
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    evaluators = [dict(e) for e in evaluators]

    os.makedirs(args.out_dir, exist_ok=True)
    cache_path = osp.join(args.out_dir, 'cache.pth')
    key = dict(version=CACHE_VERSION, config=osp.abspath(args.config),
               checkpoint=osp.abspath(args.checkpoint),
               checkpoint_mtime=osp.getmtime(args.checkpoint),
               num_images=args.num_images, cfg_options=args.cfg_options)
    images = None
    if not args.no_cache and osp.isfile(cache_path):
        cache = torch.load(cache_path, weights_only=True)
        if cache.get('key') == key and all(
                corr_type in im.get('corr_all', {}) for im in
                cache['images']):
            images = cache['images']
            for im in images:
                im['corr'] = im['corr_all'][corr_type]
            print(f'using cached candidates from {cache_path}')
    if images is None:
        images = collect_candidates(cfg, args.checkpoint, corr_type,
                                    args.num_images)
        _atomic_save(dict(key=key, images=images), cache_path, torch.save)
    n_cand = [im['boxes'].shape[0] for im in images]
    print(f'{len(images)} images, {sum(n_cand)} candidates '
          f'(max {max(n_cand) if n_cand else 0} per image), '
          f'corr_type {corr_type}, IoU threshold {iou_thr}')

    classic = summarize(evaluate(images, evaluators, iou_thr, 0.0, 1.0,
                                 max_per_img))
    rows, flat = {}, []
    for lo in args.corr_low:
        for hi in args.corr_high:
            if lo > hi:
                continue
            m = evaluate(images, evaluators, iou_thr, lo, hi, max_per_img)
            rows[(lo, hi)] = summarize(m)
            flat.append(dict(corr_low=lo, corr_high=hi, **rows[(lo, hi)]))
    text = format_tables(rows, args.corr_low, args.corr_high, classic)
    print(text)
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  iou_threshold=iou_thr, corr_type=corr_type,
                  num_images=len(images), classic_nms=classic, sweep=flat)
    _atomic_save(result, osp.join(args.out_dir, 'sweep.json'),
                 lambda o, p: json.dump(o, open(p, 'w'), indent=2))

    def write_csv(rows_, p):
        with open(p, 'w', newline='') as f:
            wr = csv.DictWriter(f, fieldnames=list(rows_[0].keys()))
            wr.writeheader()
            wr.writerows(rows_)

    _atomic_save([dict(corr_low='nms', corr_high='nms', **classic)] + flat,
                 osp.join(args.out_dir, 'sweep.csv'), write_csv)
    plot(rows, args.corr_low, args.corr_high, classic,
         osp.join(args.out_dir, 'sweep.png'))
    print(f'wrote sweep.json, sweep.csv, sweep.png to {args.out_dir}')
    return result


if __name__ == '__main__':
    main()
