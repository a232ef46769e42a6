"""Benchmark ODAM explanations: batched vs plain predict vs per-detection loop.

One image, 100 detections, all 5 scalar targets (cls, left, top, right,
bottom), random weights (timing only). Each phase runs in its own
subprocess so its peak memory (``ru_maxrss``) is its own.

    OMP_NUM_THREADS=1 python benchmarks/bench_explain.py \
        [--detectors fcos] [--size 512] [--loop-subset 10] [--out FILE]

Phases per detector:
  predict  plain ``model.predict`` of the image (median of ``--repeat``)
  batched  ``DenseHeadExplainer.explain`` with ``path='fast'`` (own
           forward + prediction + all maps at original resolution,
           normalised; frozen GroupNorm statistics on GN heads)
  default  the same with the default ``path='auto'`` (exact on GN heads)
  exact    the same with ``path='exact'`` (one run; not a default phase:
           on GN heads the default is the exact path, see its ``plan``)
  loop     one autograd backward per detection and target on the full-map
           forward (what the authors' code does), timed on
           ``--loop-subset`` detections x 5 targets and scaled linearly to
           100 x 5; also ``path='exact'`` on the same detections
  gn_error (GN heads) error of the fast and of the default path vs
           ``path='exact'``, relative to each map's max

Detectors: ``fcos`` (FCOS R50-FPN, GN head, random weights, random image of
``--size``) and ``fcos_trained`` (the shipped trained person FCOS
checkpoints/fcos_mobilenetv2_crowd-person.pth on the demo photograph
demo/images/000000005001.jpg through its test pipeline, 640x480).
The summary line prints the default path's ratio to predict, its error vs
exact and ``path='exact'`` over the naive loop.

Hook point for other detectors: add ``BENCHMARKS['name'] = dict(
build=fn() -> (model, explainer_cls), phases=...)``; ``run_phase`` uses the
generic ``build`` / explainer and the loop reference below when the model is
a dense-head detector, otherwise the entry's own ``loop`` function.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = ('cls', 'left', 'top', 'right', 'bottom')


def fcos_r50_cfg(num_classes=80):
    """mmdet's fcos_r50-caffe_fpn_gn-head config (model part)."""
    return dict(
        type='FCOS',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[102.9801, 115.9465, 122.7717],
            std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32),
        backbone=dict(
            type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
            frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=False),
            norm_eval=True, style='caffe'),
        neck=dict(
            type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256,
            start_level=1, add_extra_convs='on_output', num_outs=5,
            relu_before_extra_convs=True),
        bbox_head=dict(
            type='FCOSHead', num_classes=num_classes, in_channels=256,
            stacked_convs=4, feat_channels=256, strides=[8, 16, 32, 64, 128],
            norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                          alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='IoULoss', loss_weight=1.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                 loss_weight=1.0)),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=100))


def build_fcos(device):
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmdet_odam  # noqa: F401
    torch.manual_seed(0)
    from mmengine.config import ConfigDict
    model = MODELS.build(fcos_r50_cfg())
    model.bbox_head.test_cfg = ConfigDict(model.bbox_head.test_cfg)
    # random, but not degenerate, head weights (timing only)
    with torch.no_grad():
        for n, p in model.bbox_head.named_parameters():
            if p.dim() == 4:
                p.normal_(0, 0.01)
    return model.to(device).eval()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_fcos_trained(device):
    """The shipped trained person FCOS (MobileNetV2, GN head)."""
    from mmdet_odam.apis import init_explainer
    return init_explainer(
        os.path.join(REPO, 'configs/pretrained/fcos_mobilenetv2_crowd-'
                     'person.py'),
        os.path.join(REPO, 'checkpoints/fcos_mobilenetv2_crowd-person.pth'),
        device=device)


def demo_batch(model, size, device):
    """The demo photograph through the model's test pipeline."""
    from mmdet_odam.apis.inference import prepare_inputs
    inputs, samples = prepare_inputs(
        model, os.path.join(REPO, 'demo/images/000000005001.jpg'))
    return inputs.to(device), samples


#: dense-head detectors (the loop phase also times path='exact' on the
#: loop's detections)
DENSE = ('fcos', 'fcos_trained')
#: detector name -> builder; the two-stage work adds 'faster_rcnn' here.
BENCHMARKS = {'fcos': dict(build=build_fcos),
              'fcos_trained': dict(build=build_fcos_trained,
                                   batch=demo_batch)}
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_explain_two_stage import bench_faster_rcnn  # noqa: E402

BENCHMARKS['faster_rcnn'] = bench_faster_rcnn()


def make_batch(model, size, device):
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 255, (3, size, size),
                                        dtype=np.uint8))
    ds = DetDataSample()
    ds.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                         scale_factor=(1.0, 1.0)))
    data = model.data_preprocessor(
        dict(inputs=[img.to(device)], data_samples=[ds]), False)
    return data['inputs'], data['data_samples']


def _sync(device):
    import torch
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def loop_reference(model, inputs, samples, n_det, targets=TARGETS):
    """One autograd backward per detection and target (authors' way)."""
    import torch
    from mmdet_odam.core import (apply_grad_mode, box_sigmas,
                                 gaussian_smooth, level_to_image,
                                 minmax_normalize, odam_raw)
    from mmdet_odam.explainers.base import model_guard
    from mmdet_odam.explainers.dense import (_level_strides, _mlvl_priors,
                                             candidate_scalars,
                                             tracked_predict_by_feat)
    head = model.bbox_head
    meta = samples[0].metainfo
    with model_guard(model):
        with torch.no_grad():
            feats = model.extract_feat(inputs)
        feats = [f.detach().requires_grad_(True) for f in feats]
        with torch.enable_grad():
            outs = head(feats)
        res = tracked_predict_by_feat(head, *[[t.detach() for t in o]
                                              for o in outs],
                                      batch_img_metas=[meta], rescale=True)[0]
        res = res[:n_det]
        priors = _mlvl_priors(head, feats)
        strides = _level_strides(head)
        maps = []
        for i in range(len(res)):
            lvl, p = int(res.level_ids[i]), int(res.loc_inds[i])
            w = feats[lvl].shape[-1]
            vec = [o[lvl][0:1, :, p // w, p % w] for o in outs]
            ys = candidate_scalars(head, vec[0], vec[1], vec[2],
                                   torch.zeros(1, dtype=torch.long,
                                               device=inputs.device),
                                   res.labels[i:i + 1], priors[lvl][p:p + 1],
                                   torch.tensor([strides[lvl][1]],
                                                device=inputs.device))
            box = ys.pop('boxes').detach()
            wh = torch.stack([(box[:, 2] - box[:, 0]) / strides[lvl][1],
                              (box[:, 3] - box[:, 1]) / strides[lvl][0]], 1)
            for t in targets:
                from mmdet_odam.explainers.targets import Target
                g, = torch.autograd.grad(ys[Target(t)][0], feats[lvl],
                                         retain_graph=True)
                g = gaussian_smooth(g, box_sigmas(wh))
                m = apply_grad_mode(odam_raw(g, feats[lvl].detach()))
                m = level_to_image(m, strides[lvl], meta['img_shape'],
                                   meta['ori_shape'], meta['scale_factor'])
                maps.append(minmax_normalize(m))
        _sync(inputs.device)
    return len(res)


def run_phase(name, phase, args):
    import torch
    torch.set_grad_enabled(True)
    device = args.device
    model = BENCHMARKS[name]['build'](device)
    inputs, samples = BENCHMARKS[name].get('batch', make_batch)(
        model, args.size, device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if str(device).startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    out = dict(detector=name, phase=phase, size=args.size,
               threads=torch.get_num_threads(), device=str(device))
    from mmdet_odam.explainers import build_explainer
    if phase == 'predict':
        times = []
        for _ in range(args.repeat + 1):
            t = time.perf_counter()
            with torch.no_grad():
                r = model.predict(inputs, samples)
            _sync(device)
            times.append(time.perf_counter() - t)
        out['n_det'] = len(r[0].pred_instances)
        out['time_s'] = statistics.median(times[1:])
    elif phase in ('batched', 'default', 'exact'):
        path = dict(batched='fast', default=None, exact='exact')[phase]
        exp = build_explainer(model, targets=TARGETS, path=path)
        if hasattr(exp, 'plan'):
            out['plan'] = exp.plan()[0]
        times, ptimes = [], []
        e = None
        # the exact paths run once after a 2-detection warm-up (minutes)
        runs = args.repeat + 1 if phase == 'batched' else 2
        for k in range(runs):
            topk = 2 if k == 0 and phase != 'batched' else 100
            e = None  # free the previous result (peak memory of one call)
            # interleaved plain predict: the ratio under the same load
            t = time.perf_counter()
            with torch.no_grad():
                model.predict(inputs, samples)
            _sync(device)
            ptimes.append(time.perf_counter() - t)
            t = time.perf_counter()
            e = exp.explain(inputs, samples, score_thr=0.0, topk=topk)[0]
            _sync(device)
            times.append(time.perf_counter() - t)
        out['n_det'] = len(e)
        out['explainer'] = type(exp).__name__
        out['time_s'] = statistics.median(times[1:])
        out['interleaved_predict_s'] = statistics.median(ptimes[1:])
        out['runs'] = len(times) - 1
        out['ratio_to_interleaved_predict'] = (out['time_s'] /
                                               out['interleaved_predict_s'])
    elif phase == 'loop':
        k = args.loop_subset
        loop = BENCHMARKS[name].get('loop', loop_reference)
        loop(model, inputs, samples, 2)  # warm-up
        t = time.perf_counter()
        n = loop(model, inputs, samples, k)
        _sync(device)
        dt = time.perf_counter() - t
        out['timed_det'] = n
        out['timed_s'] = dt
        out['time_s'] = dt * 100 / n
        out['scaled_from'] = f'{n} detections x 5 targets, scaled to 100'
        if name in DENSE:  # path='exact' on the same detections
            exp = build_explainer(model, targets=TARGETS, path='exact')
            exp.explain(inputs, samples, score_thr=0.0, topk=2)  # warm-up
            t = time.perf_counter()
            e = exp.explain(inputs, samples, score_thr=0.0, topk=k)[0]
            _sync(device)
            out['exact_same_det_s'] = time.perf_counter() - t
            out['exact_same_det_n'] = len(e)
            out['exact_over_loop_same_det'] = out['exact_same_det_s'] / dt
    elif phase == 'gn_error':
        out.update(gn_error(model, inputs, samples, args.gn_dets))
    out['peak_rss_mb'] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    out['rss_after_build_mb'] = base_rss / 1024
    if str(device).startswith('cuda'):
        out['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2**20
    return out


def map_errors(got, ref, prefix):
    """Max |got - ref| per map (both normalised to max 1), per target and
    over all targets, and the lowest centred cosine similarity."""
    import torch
    out, alls = {}, []
    for t in TARGETS:
        a, b = got.maps[t].flatten(1), ref.maps[t].flatten(1)
        err = (a - b).abs().max(1).values
        corr = torch.nn.functional.cosine_similarity(a - a.mean(1, True),
                                                     b - b.mean(1, True))
        alls.append(err)
        out[f'{prefix}_{t}'] = dict(median=err.median().item(),
                                    max=err.max().item(),
                                    min_corr=corr.min().item())
    alls = torch.cat(alls)
    out[f'{prefix}_all'] = dict(median=alls.median().item(),
                                max=alls.max().item(), maps=len(alls))
    return out


def gn_error(model, inputs, samples, n_det):
    """The fast (frozen-GN) and the default path vs ``path='exact'`` on the
    top detections, per FPN level too."""
    import torch
    from mmdet_odam.explainers import DenseHeadExplainer
    kw = dict(score_thr=0.0, topk=n_det)
    e = {p: DenseHeadExplainer(model, targets=TARGETS, path=p).explain(
        inputs, samples, **kw)[0] for p in ('fast', 'auto', 'exact')}
    out = map_errors(e['fast'], e['exact'], 'gn_err')
    out.update(map_errors(e['auto'], e['exact'], 'default_err'))
    lv = e['exact'].level_ids
    for lvl in lv.unique().tolist():
        err = torch.cat([(e['fast'].maps[t] - e['exact'].maps[t])[lv == lvl]
                         .flatten(1).abs().max(1).values for t in TARGETS])
        out[f'gn_err_level{lvl}'] = dict(median=err.median().item(),
                                         max=err.max().item(),
                                         maps=len(err))
    out['gn_levels'] = lv.tolist()
    return out


def real_check(n_images=12, n_gn_images=4):
    """Trained person FCOS (checkpoints/fcos_mobilenetv2_crowd-person.pth) on
    coco_val2017_tiny80: pointing game of the default ``cls`` maps and the
    frozen-GN patch path vs ``exact=True``."""
    import numpy as np
    import torch
    from mmdet.structures.bbox import bbox_overlaps
    from mmdet_odam.apis import explain_image, init_explainer
    from mmdet_odam.utils import repo_root, shared_dir
    root = shared_dir() / 'data' / 'coco_val2017_tiny80'
    with open(root / 'annotations' / 'instances_val2017.json') as f:
        ann = json.load(f)
    imgs = {i['id']: i for i in ann['images']}
    gts = {}
    for a in ann['annotations']:
        if a['category_id'] == 1 and not a['iscrowd'] and a['area'] > 1024:
            x, y, w, h = a['bbox']
            gts.setdefault(a['image_id'], []).append([x, y, x + w, y + h])
    rr = repo_root()
    model = init_explainer(
        str(rr / 'configs/pretrained/fcos_mobilenetv2_crowd-person_coco-'
            'tiny80.py'), str(rr / 'checkpoints/fcos_mobilenetv2_crowd-'
                              'person.pth'))
    hit = tot = 0
    errs, corrs = [], []
    for k, (iid, boxes) in enumerate(sorted(gts.items())[:n_images]):
        path = str(root / 'images' / imgs[iid]['file_name'])
        e = explain_image(model, path, targets=('cls', ), score_thr=0.3,
                          topk=20)
        if len(e):
            g = torch.tensor(boxes, dtype=torch.float32)
            best, j = bbox_overlaps(e.bboxes, g).max(1)
            for d in (best >= 0.5).nonzero().flatten().tolist():
                m = e.maps['cls'][d]
                py, px = divmod(int(m.argmax()), m.shape[1])
                b = g[j[d]].tolist()
                tot += 1
                hit += int(b[0] <= px + 0.5 <= b[2]
                           and b[1] <= py + 0.5 <= b[3])
        if k < n_gn_images:
            kw = dict(targets=('cls', 'left', 'bottom'), score_thr=0.3,
                      topk=10)
            ex = explain_image(model, path, exact=True, **kw)
            fa = explain_image(model, path, exact=False, **kw)
            for t in ex.maps:
                a, b2 = fa.maps[t].flatten(1), ex.maps[t].flatten(1)
                errs += (a - b2).abs().max(1).values.tolist()
                corrs += torch.nn.functional.cosine_similarity(
                    a - a.mean(1, True), b2 - b2.mean(1, True)).tolist()
    out = dict(pointing_hits=hit, pointing_total=tot,
               gn_maps=len(errs), gn_err_median=float(np.median(errs)),
               gn_err_max=float(np.max(errs)),
               gn_min_corr=float(np.min(corrs)))
    print('REAL ' + json.dumps(out))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--detectors', nargs='+',
                   default=['fcos', 'fcos_trained'])
    p.add_argument('--phases', nargs='+',
                   default=['predict', 'batched', 'default', 'loop',
                            'gn_error'])
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--loop-subset', type=int, default=10)
    p.add_argument('--gn-dets', type=int, default=20)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=None, help='write results as JSON')
    p.add_argument('--real-check', action='store_true',
                   help='only run the trained-model checks (pointing game, '
                   'frozen GN vs exact) and exit')
    p.add_argument('--phase', default=None, help=argparse.SUPPRESS)
    p.add_argument('--detector', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.real_check:
        import warnings
        warnings.simplefilter('ignore')
        real_check()
        return
    if args.phase:  # child process
        print('RESULT ' + json.dumps(run_phase(args.detector, args.phase,
                                               args)))
        return
    results = []
    for det in args.detectors:
        if det not in BENCHMARKS:
            raise SystemExit(f'unknown detector {det!r}; valid: '
                             f'{", ".join(BENCHMARKS)}')
        rows = {}
        for phase in args.phases:
            cmd = [sys.executable, os.path.abspath(__file__), '--phase',
                   phase, '--detector', det, '--size', str(args.size),
                   '--repeat', str(args.repeat), '--loop-subset',
                   str(args.loop_subset), '--gn-dets', str(args.gn_dets),
                   '--device', args.device]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines()
                    if x.startswith('RESULT ')]
            if r.returncode or not line:
                raise SystemExit(f'{det}/{phase} failed:\n{r.stderr[-3000:]}')
            rows[phase] = json.loads(line[-1][7:])
            print(json.dumps(rows[phase]), flush=True)
        summary = dict(detector=det)
        if 'batched' in rows:
            summary['batched_over_interleaved_predict'] = rows['batched'][
                'ratio_to_interleaved_predict']
        if 'predict' in rows and 'batched' in rows:
            summary['batched_over_predict'] = (rows['batched']['time_s'] /
                                               rows['predict']['time_s'])
        if 'loop' in rows and 'batched' in rows:
            summary['loop_over_batched'] = (rows['loop']['time_s'] /
                                            rows['batched']['time_s'])
        for ph in ('default', 'exact'):
            if ph in rows:
                summary[f'{ph}_plan'] = rows[ph].get('plan')
                summary[f'{ph}_over_interleaved_predict'] = rows[ph][
                    'ratio_to_interleaved_predict']
            if ph in rows and 'predict' in rows:
                summary[f'{ph}_over_predict'] = (rows[ph]['time_s'] /
                                                 rows['predict']['time_s'])
        if 'exact' in rows and 'loop' in rows:  # per detection
            summary['exact_over_loop_per_det'] = (
                rows['exact']['time_s'] / rows['exact']['n_det'] /
                (rows['loop']['time_s'] / 100))
        if 'exact_over_loop_same_det' in rows.get('loop', {}):
            summary['exact_over_loop_same_det'] = rows['loop'][
                'exact_over_loop_same_det']
        if 'gn_error' in rows:
            summary['default_err_vs_exact'] = rows['gn_error'][
                'default_err_all']
            summary['fast_err_vs_exact'] = rows['gn_error']['gn_err_all']
        print('SUMMARY ' + json.dumps(summary), flush=True)
        results.append(dict(rows=rows, summary=summary))
    if args.out:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(
            os.path.abspath(args.out)))
        with os.fdopen(fd, 'w') as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.out)


if __name__ == '__main__':
    main()
