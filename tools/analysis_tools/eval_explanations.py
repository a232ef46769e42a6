# Copyright (c) mmdet-odam. Evaluate explanation methods (paper Sec. 4.2).
"""Explain the well-detected objects of a test set with several methods and
score the maps: deletion / insertion (Tab. 1, Fig. 5a-b), VEA (Fig. 5c),
ODI (Tab. 3a), pointing games and compactness (Tab. 4); optional sanity check
with randomised weights (App. A.5.1).

Example::

    python tools/analysis_tools/eval_explanations.py \
        configs/pretrained/fcos_mobilenetv2_crowd-person_coco-tiny80.py \
        checkpoints/fcos_mobilenetv2_crowd-person.pth \
        --methods odam gradcam gradcampp drise --out-dir work_dirs/eval_expl \
        --max-objects 30 --drise-masks 1000

Writes ``objects.jsonl`` (one line per object and method, appended as soon
as it is done; a killed run resumes and skips them), ``summary.json``,
``tables.md`` and ``fig5_{deletion,insertion,vea}.png`` to ``--out-dir``.
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time
import zlib

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.utils import ProgressBar  # noqa: E402

import mmdet_odam  # noqa: E402,F401
from mmdet_odam.evaluation.functional import (  # noqa: E402
    VEA_THRESHOLDS, localisation_metrics, map_pearson, map_spearman,
    markdown_tables, match_well_detected, perturbation_curve, summarize,
    tracked_score)
from mmdet_odam.utils.atomic import write_text_atomic  # noqa: E402

METHODS = ('odam', 'gradcam', 'gradcampp', 'drise')
NO_MASK_NOTE = ('The data set has no instance masks: mask metrics (PG(m), '
                'enPG(m), ODI mask, VEA) are skipped; box metrics are '
                'computed.')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Evaluate explanation methods on a test set '
        '(ODAM paper Sec. 4.2)')
    p.add_argument('config', help='detector config (its test_dataloader is '
                   'the evaluated set)')
    p.add_argument('checkpoint', help='detector checkpoint')
    p.add_argument('--methods', nargs='+', default=list(METHODS),
                   metavar='METHOD',
                   help=f'explanation methods, space or comma separated '
                   f'({", ".join(METHODS)})')
    p.add_argument('--out-dir', required=True)
    p.add_argument('--max-objects', type=int, default=None,
                   help='stop after this many explained objects')
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--start-image', type=int, default=0,
                   help='skip the images before this dataset index (to '
                   'split a run; merge the objects.jsonl files and use '
                   '--summarize-only)')
    p.add_argument('--drise-masks', type=int, default=5000)
    p.add_argument('--drise-chunk', type=int, default=16,
                   help='masked images per D-RISE forward')
    p.add_argument('--drise-normalize', choices=('coverage', 'raw'),
                   default='coverage',
                   help='D-RISE map: weighted masks divided by each '
                   "pixel's mask coverage (coverage) or their plain sum "
                   '(raw, older figures); see docs/baselines.md')
    p.add_argument('--iou-thr', type=float, default=0.9,
                   help='a GT object is well detected if its best detection '
                   'has IoU > this (paper: 0.9)')
    p.add_argument('--score-thr', type=float, default=0.1,
                   help='detections considered for matching (authors: 0.1)')
    p.add_argument('--track-ref', choices=('det', 'gt'), default='det',
                   help='deletion/insertion score: best prediction of the '
                   'same class with IoU > --track-iou to the explained '
                   'detection (det, paper) or to its GT box (gt, authors\' '
                   'code)')
    p.add_argument('--track-iou', type=float, default=0.5)
    p.add_argument('--n-steps', type=int, default=100)
    p.add_argument('--eval-every', type=int, default=10)
    p.add_argument('--step-area', choices=('box', 'image'), default='box',
                   help='pixels per step: GT box area / n_steps (authors) '
                   'or image area / n_steps')
    p.add_argument('--odi-objects', choices=('all', 'classes'),
                   default='all',
                   help='ODI "other objects": every non-crowd COCO object '
                   'of the image, any class (all, paper and authors\' code; '
                   'COCO json only) or only those of the config\'s classes')
    p.add_argument('--skip-deletion', action='store_true',
                   help='only the map metrics (no deletion / insertion: '
                   'they cost ~23 detector forwards per object and method)')
    p.add_argument('--smoothing', default='gaussian',
                   help='ODAM gradient smoothing (gaussian | none)')
    p.add_argument('--sanity-check', action='store_true',
                   help='also explain with randomised weights and report the '
                   'correlation with the trained maps (App. A.5.1)')
    p.add_argument('--summarize-only', action='store_true',
                   help='only rebuild summary.json, tables.md and the plots '
                   'from --out-dir/objects.jsonl (e.g. after stopping a run)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    args.methods = [m for v in args.methods for m in v.split(',') if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        p.error(f'--methods: unknown {bad or "(none given)"}; valid: '
                f'{", ".join(METHODS)}')
    if not 0 <= args.iou_thr < 1 or not 0 <= args.track_iou < 1:
        p.error('--iou-thr and --track-iou must be in [0, 1)')
    if not 0 <= args.score_thr <= 1:
        p.error('--score-thr must be in [0, 1]')
    if args.drise_masks < 1:
        p.error('--drise-masks must be >= 1')
    return args


# ----------------------------------------------------------------- data
def gt_of(info: dict, shape):
    """Non-crowd GT boxes (N, 4), labels (N,), masks (N, H, W) or None."""
    from mmdet.structures.mask import PolygonMasks
    inst = [i for i in info.get('instances', [])
            if not i.get('ignore_flag', 0)]
    boxes = torch.tensor([i['bbox'] for i in inst],
                         dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([i['bbox_label'] for i in inst], dtype=torch.long)
    if not any('mask' in i for i in inst):
        return boxes, labels, None
    h, w = shape
    masks = []
    for i in inst:
        m = i.get('mask') or []
        if isinstance(m, dict):  # RLE
            from pycocotools import mask as mask_util
            if isinstance(m.get('counts'), list):
                m = mask_util.frPyObjects(m, h, w)
            masks.append(torch.from_numpy(mask_util.decode(m).astype(bool)))
        else:
            polys = [np.asarray(q, dtype=np.float64) for q in m if len(q) >= 6]
            if not polys:  # empty mask
                masks.append(torch.zeros(h, w, dtype=torch.bool))
                continue
            bm = PolygonMasks([polys], h, w).to_ndarray()[0]
            masks.append(torch.from_numpy(bm.astype(bool)))
    return boxes, labels, torch.stack(masks)


class OtherObjects:
    """Non-crowd objects of the classes a dataset leaves out (for ODI over
    all objects); only for COCO json data sets."""

    def __init__(self, dataset):
        self.coco, ann = None, str(getattr(dataset, 'ann_file', '') or '')
        cat_ids = getattr(dataset, 'cat_ids', None)
        if ann.endswith('.json') and cat_ids is not None and osp.isfile(ann):
            import contextlib
            import io

            from pycocotools.coco import COCO
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(ann)
            self.keep = set(cat_ids)

    def get(self, img_id, shape, with_masks):
        """(M, 4) xyxy boxes and (M, H, W) masks (or None)."""
        h, w = shape
        anns = [] if self.coco is None else [
            a for a in self.coco.loadAnns(self.coco.getAnnIds(
                imgIds=[img_id], iscrowd=False))
            if a['category_id'] not in self.keep and a['bbox'][2] > 0
            and a['bbox'][3] > 0
        ]
        boxes = torch.tensor([[a['bbox'][0], a['bbox'][1],
                               a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        if not with_masks:
            return boxes, None
        masks = [torch.from_numpy(self.coco.annToMask(a).astype(bool))
                 if a.get('segmentation') else torch.zeros(
                     h, w, dtype=torch.bool) for a in anns]
        return boxes, (torch.stack(masks) if masks else torch.zeros(
            0, h, w, dtype=torch.bool))


def load_done(path):
    """Records already written (a torn last line is ignored)."""
    done = {}
    if not osp.isfile(path):
        return done
    with open(path) as f:
        text = f.read()
    good = []
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn line of a killed run
        done[(r['key'], r['method'])] = r
        good.append(line)
    if good != text.splitlines() or (text and not text.endswith('\n')):
        write_atomic(path, ''.join(x + '\n' for x in good))
    return done


def append(path, rec):
    with open(path, 'a') as f:
        f.write(json.dumps(rec) + '\n')
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- model
def build_explainers(model, methods, args, out_dir):
    from mmdet_odam.explainers import build_explainer
    out = {}
    for m in methods:
        kw = {}
        if m == 'odam':
            kw = dict(smoothing=args.smoothing)
        elif m == 'drise':
            kw = dict(n_masks=args.drise_masks, chunk_size=args.drise_chunk,
                      seed=args.seed, resume_dir=osp.join(out_dir, 'drise'),
                      progress=args.drise_masks >= 500,
                      normalize=args.drise_normalize)
        out[m] = build_explainer(model, m, **kw)
    return out


def randomized_copy(model, seed=0):
    """Model with all conv / linear weights re-drawn (Kaiming normal) and
    biases zeroed: the model parameter randomisation test."""
    rnd = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in rnd.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) *
                        (2.0 / fan_in)**0.5)
            elif name.endswith('bias') and 'norm' not in name and \
                    'bn' not in name and 'gn' not in name:
                p.zero_()
    return rnd


def score_fn_for(model, meta, ref_box, ref_label, iou_thr):
    """(B, 3, h, w) raw images -> (B,) tracked score of the object."""
    from mmdet.structures import DetDataSample

    @torch.no_grad()
    def fn(imgs):
        samples = [DetDataSample(metainfo=meta) for _ in range(len(imgs))]
        data = model.data_preprocessor(
            dict(inputs=list(imgs), data_samples=samples), False)
        res = model.predict(data['inputs'], data['data_samples'],
                            rescale=True)
        return torch.tensor([
            tracked_score(r.pred_instances.bboxes.cpu(),
                          r.pred_instances.scores.cpu(),
                          r.pred_instances.labels.cpu(), ref_box, ref_label,
                          iou_thr) for r in res
        ])

    return fn


# --------------------------------------------------------------- output
def plot_curves(summary, out_dir):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    specs = [('deletion', 'Deletion steps (fraction)', 'score (% of s0)'),
             ('insertion', 'Insertion steps (fraction)', 'score x 100'),
             ('vea', 'threshold T', 'IoU(map > T, GT mask)')]
    files = []
    for key, xl, yl in specs:
        if not any(key in s for s in summary.values()):
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for m, s in summary.items():
            if key not in s:
                continue
            ys = s[key]
            xs = VEA_THRESHOLDS if key == 'vea' else np.linspace(
                0, 1, len(ys))
            auc = s.get(f'{key}_auc', None)
            lab = m if auc is None else f'{m} ({auc:.3g})'
            ax.plot(xs, ys, marker='o', ms=3, label=lab)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        f = osp.join(out_dir, f'fig5_{key}.png')
        fig.savefig(f + '.tmp.png', dpi=120)
        os.replace(f + '.tmp.png', f)
        plt.close(fig)
        files.append(f)
    return files


def write_outputs(records, methods, args, out_dir, notes):
    summary = summarize(records, methods)
    note = ' '.join(notes)
    write_atomic(osp.join(out_dir, 'summary.json'), json.dumps(
        dict(summary=summary, notes=notes, settings=vars(args)), indent=1))
    write_atomic(osp.join(out_dir, 'tables.md'),
                 markdown_tables(summary, note) + '\n')
    plot_curves(summary, out_dir)
    return summary


# ----------------------------------------------------------------- main
def explain_object_maps(explainers, inputs, samples, boxes, labels):
    out = {}
    for m, ex in explainers.items():
        t = time.perf_counter()
        res = ex.explain(inputs, samples, score_thr=0.0, topk=len(boxes),
                         boxes=[boxes], labels=[labels])[0]
        out[m] = (res.maps['cls'].cpu(), time.perf_counter() - t)
    return out


#: options that do not change a finished object's record (safe to change
#: when resuming a run in the same --out-dir).
RESUMABLE = ('out_dir', 'max_objects', 'max_images', 'start_image',
             'summarize_only', 'device', 'methods', 'drise_chunk',
             'sanity_check')  # records without it get it on resume


def check_resume_settings(args) -> None:
    """Record the run's settings in ``--out-dir/settings.json``; refuse to
    resume a run whose finished records were made with other settings."""
    path = osp.join(args.out_dir, 'settings.json')
    now = {k: v for k, v in sorted(vars(args).items())
           if k not in RESUMABLE}
    now = json.loads(json.dumps(now))  # tuples -> lists, as stored
    if osp.isfile(osp.join(args.out_dir, 'objects.jsonl')) and \
            osp.isfile(path):
        old = json.load(open(path))
        diff = sorted(k for k in set(old) | set(now)
                      if old.get(k) != now.get(k))
        if diff:
            raise ValueError(
                f'{args.out_dir} holds results made with other settings: '
                + ', '.join(f'{k}: {old.get(k)!r} then, {now.get(k)!r} now'
                            for k in diff)
                + '; use another --out-dir or the same options')
    write_text_atomic(path, json.dumps(now, indent=1))


def main(argv=None):
    args = parse_args(argv)
    methods = list(dict.fromkeys(args.methods))
    rec_path = osp.join(args.out_dir, 'objects.jsonl')
    if args.summarize_only:
        if not osp.isfile(rec_path):
            raise FileNotFoundError(f'{rec_path} does not exist')
        old = osp.join(args.out_dir, 'summary.json')
        notes = json.load(open(old)).get('notes', []) if osp.isfile(
            old) else []
        summary = write_outputs(list(load_done(rec_path).values()), methods,
                                args, args.out_dir, notes)
        print_log(markdown_tables(summary, ' '.join(notes)),
                  logger='current')
        return summary
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    for f in (args.config, args.checkpoint):
        if not osp.isfile(f):
            raise FileNotFoundError(f'{f} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        from mmdet_odam.utils import merge_cfg_options
        merge_cfg_options(cfg, args.cfg_options)
    os.makedirs(args.out_dir, exist_ok=True)
    check_resume_settings(args)
    model = init_detector(cfg, args.checkpoint, device=args.device).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    explainers = build_explainers(model, methods, args, args.out_dir)
    rnd_explainers = None
    if args.sanity_check:
        rnd_model = randomized_copy(model, args.seed)
        rnd_explainers = build_explainers(rnd_model, methods, args,
                                          osp.join(args.out_dir, 'random'))
    others = OtherObjects(dataset) if args.odi_objects == 'all' else None
    done = load_done(rec_path)
    notes, n_obj = [], 0
    n_img = len(dataset) if args.max_images is None else min(
        len(dataset), args.max_images)
    bar = ProgressBar(n_img)
    for idx in range(n_img):
        bar.update()
        if idx < args.start_image:
            continue
        if args.max_objects is not None and n_obj >= args.max_objects:
            break
        info = dataset.get_data_info(idx)
        data = dataset[idx]
        ds = data['data_samples']
        meta = ds.metainfo
        oh, ow = [int(v) for v in meta['ori_shape'][:2]]
        gt_boxes, gt_labels, gt_masks = gt_of(info, (oh, ow))
        if len(gt_boxes) == 0:
            continue
        if gt_masks is None:
            if NO_MASK_NOTE not in notes:
                notes.append(NO_MASK_NOTE)
                print_log(NO_MASK_NOTE, logger='current')
        batch = model.data_preprocessor(
            dict(inputs=[data['inputs']], data_samples=[ds]), False)
        inputs, samples = batch['inputs'], batch['data_samples']
        with torch.no_grad():
            det = model.predict(inputs, copy.deepcopy(samples),
                                rescale=True)[0].pred_instances
        keep = det.scores >= args.score_thr
        dets_b, dets_s, dets_l = (det.bboxes[keep].cpu(),
                                  det.scores[keep].cpu(),
                                  det.labels[keep].cpu())
        p_inds, g_inds = match_well_detected(dets_b, dets_l, gt_boxes,
                                             gt_labels, args.iou_thr)
        img_id = meta.get('img_id', idx)
        keys = [f'{img_id}_{int(g)}' for g in g_inds]
        if args.max_objects is not None:
            room = args.max_objects - n_obj
            p_inds, g_inds, keys = p_inds[:room], g_inds[:room], keys[:room]
        n_obj += len(keys)

        def todo_of(k):
            return [m for m in methods if (k, m) not in done or (
                args.sanity_check and 'sanity_pearson' not in done[(k, m)])]

        sel = [i for i, k in enumerate(keys) if todo_of(k)]
        if not sel:
            continue
        todo = sorted({m for i in sel for m in todo_of(keys[i])},
                      key=methods.index)
        p_sel, g_sel = p_inds[sel], g_inds[sel]
        boxes, labels = dets_b[p_sel], dets_l[p_sel]
        maps = explain_object_maps({m: explainers[m] for m in todo}, inputs,
                                   samples, boxes, labels)
        rmaps = explain_object_maps(
            {m: rnd_explainers[m] for m in todo}, inputs, samples, boxes,
            labels) if rnd_explainers else {}
        # ODI: the explained object among all objects of the image
        all_boxes, all_masks = gt_boxes, gt_masks
        if others is not None:
            ob, om = others.get(img_id, (oh, ow), gt_masks is not None)
            all_boxes = torch.cat([gt_boxes, ob])
            if gt_masks is not None:
                all_masks = torch.cat([gt_masks, om])
        sx, sy = [float(v) for v in meta.get('scale_factor', (1, 1))[:2]]
        img = data['inputs'].float()
        for j, i in enumerate(sel):
            key, g = keys[i], int(g_sel[j])
            gb = gt_boxes[g]
            ref = boxes[j] if args.track_ref == 'det' else gb
            fn = score_fn_for(model, meta, ref, int(labels[j]),
                              args.track_iou)
            if args.step_area == 'box':
                area = float((gb[2] - gb[0]) * (gb[3] - gb[1])) * sx * sy
                k_px = max(1, int(area / args.n_steps))
            else:
                k_px = None
            for m in todo_of(key):
                heat = maps[m][0][j]
                rec = dict(key=key, img_id=img_id, img_path=meta.get(
                    'img_path'), gt_index=g, method=m,
                    det_box=boxes[j].tolist(), det_score=float(
                        dets_s[p_sel[j]]), label=int(labels[j]),
                    explain_s_per_image=maps[m][1])
                rec.update(localisation_metrics(heat, all_boxes, g,
                                                all_masks))
                for mode in () if args.skip_deletion else (
                        'deletion', 'insertion'):
                    gen = torch.Generator().manual_seed(
                        args.seed + zlib.crc32(key.encode()))
                    c = perturbation_curve(img, heat, fn, mode,
                                           args.n_steps, args.eval_every,
                                           k_px, generator=gen)
                    rec[mode] = c['curve'].tolist()
                    rec[f'{mode}_auc'] = c['auc']
                    rec[f'{mode}_score0'] = c['score0']
                if rmaps:
                    rec['sanity_pearson'] = map_pearson(heat, rmaps[m][0][j])
                    rec['sanity_spearman'] = map_spearman(
                        heat, rmaps[m][0][j])
                append(rec_path, rec)
                done[(key, m)] = rec
        write_outputs(list(done.values()), methods, args, args.out_dir,
                      notes)
    print()
    summary = write_outputs(list(done.values()), methods, args, args.out_dir,
                            notes)
    print_log(markdown_tables(summary, ' '.join(notes)), logger='current')
    print_log(f'Results in {args.out_dir}', logger='current')
    return summary


if __name__ == '__main__':
    main()
