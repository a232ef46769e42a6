"""Speed of Odam-NMS vs classic NMS (paper Tab. 5 "time per image").

Times, per image, on the same FCOS model and input:

- ``pipeline_nms``: detector forward + post-processing with mmcv NMS;
- ``pipeline_odam``: detector forward + ODAM ``cls`` maps of all candidates
  (one batched pass, short edge 50) + Odam-NMS; the head's own
  ``test_cfg.nms.type='odam_nms'`` path (``OdamFCOSHead``); on a GPU also
  without CUDA graphs (``cuda_graph=False``), with a check that both give
  the same detections and maps;
- the steps alone on the same candidates: ``maps`` (batched candidate maps
  from the recorded forward: the reversed head; eager, and on a GPU also
  ``maps_graph`` as predict runs it, a replayed CUDA graph),
  ``nms_step`` (mmcv ``batched_nms``) and ``odam_nms_step``
  (``batched_odam_nms``).

Candidates: ``score_thr=0`` and a per-level ``nms_pre`` chosen so the
image yields ``--num-candidates`` (default 1000) pre-NMS candidates. Random
weights are fine for timing (``--checkpoint`` to use trained ones).

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_nms.py --repeats 3 \
        --num-candidates 100 300 1000 --out work_dirs/bench_nms.json
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import mmdet_odam  # noqa: E402,F401
from mmdet_odam.core import Candidates  # noqa: E402
from mmdet_odam.explainers.dense import dense_candidate_maps  # noqa: E402
from mmdet_odam.explainers.reversed_head import (  # noqa: E402
    forward_recording, reversed_head_spec)
from mmdet_odam.nms import batched_odam_nms, nms_map_size  # noqa: E402

DEFAULT_CONFIG = 'configs/odam_nms/fcos_mobilenetv2_crowd-scenes_odam-nms.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG,
                   help='an Odam-NMS dense-head config')
    p.add_argument('--checkpoint', default=None)
    p.add_argument('--shape', type=int, nargs=2, default=[480, 640],
                   metavar=('H', 'W'), help='network input size')
    p.add_argument('--num-candidates', type=int, nargs='+',
                   default=[100, 300, 1000],
                   help='pre-NMS candidates per image (one run each)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=None, help='write the figures (json)')
    return p.parse_args(argv)


def _nms_pre_for(level_sizes, n):
    """Largest per-level top-k whose total over levels is <= n."""
    best = 1
    for k in range(1, max(level_sizes) + 1):
        if sum(min(k, s) for s in level_sizes) <= n:
            best = k
        else:
            break
    return best


def _time(fn, repeats, warmup, sync):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _time_pair(fa, fb, repeats, warmup, sync):
    """Medians of two functions timed alternately (a drifting machine
    slows both alike): wall seconds of each, and the median of the
    per-pair ratios b / a of the process CPU time (on one thread what a
    busy machine disturbs least)."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb, ca, cb = [], [], [], []
    for _ in range(repeats):
        for fn, out, cpu in ((fa, ta, ca), (fb, tb, cb)):
            sync()
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            out.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return statistics.median(ta), statistics.median(tb), statistics.median(
        [b / a for a, b in zip(ca, cb)])


def build(args):
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    nms_cfg = copy.deepcopy(cfg.model.test_cfg.nms)
    if nms_cfg.get('type') != 'odam_nms':
        raise ValueError(f'{args.config}: test_cfg.nms.type must be '
                         f"'odam_nms', got {nms_cfg.get('type')!r}")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    return model.to(args.device).eval(), nms_cfg


def run_one(model, odam_cfg, inputs, samples, feats, num_candidates,
            args, sync):
    """All timings for one candidate count."""
    from mmcv.ops import batched_nms
    head = model.bbox_head
    sizes = [f.shape[-2] * f.shape[-1] for f in feats]
    model.test_cfg.update(
        score_thr=0.0, min_bbox_size=-1, max_per_img=num_candidates,
        nms_pre=_nms_pre_for(sizes, num_candidates))
    plain_cfg = dict(type='nms', iou_threshold=odam_cfg['iou_threshold'])

    def predict(nms):
        head.test_cfg.nms = copy.deepcopy(nms)
        with torch.no_grad():
            return model.predict(inputs, copy.deepcopy(samples))[0] \
                .pred_instances

    # candidates (no NMS) through the head's tracked post-processing
    with torch.no_grad():
        outs = head(feats)
        cands = head.predict_by_feat(
            *outs, batch_img_metas=[samples[0].metainfo],
            cfg=model.test_cfg, rescale=False, with_nms=False)[0]
    n = len(cands)
    meta = samples[0].metainfo
    size = nms_map_size(meta['img_shape'])

    record = None
    if reversed_head_spec(head) is not None:  # what predict's forward keeps
        with torch.no_grad():
            record = forward_recording(head, feats)[1]

    rows = Candidates.of_image(cands.level_ids, cands.loc_inds, cands.labels,
                               cands.bboxes)

    def maps_fn():
        with torch.no_grad():
            return dense_candidate_maps(
                head, feats, rows, out_size=size,
                pad_shape=meta['batch_input_shape'], record=record)

    maps = maps_fn()
    res = dict(
        device=args.device, threads=args.threads,
        input_shape=list(meta['img_shape']), candidates=n,
        map_size=list(size), kept_nms=len(predict(plain_cfg)),
        kept_odam=len(predict(odam_cfg)), nms_cfg=dict(odam_cfg))
    t = lambda fn: _time(fn, args.repeats, args.warmup, sync)  # noqa: E731
    res['pipeline_nms_s'], res['pipeline_odam_s'], res['ratio_cpu'] = \
        _time_pair(
            lambda: predict(plain_cfg), lambda: predict(odam_cfg),
            args.repeats, args.warmup, sync)
    res['forward_s'] = t(lambda: head(model.extract_feat(inputs)))
    res['maps_s'] = t(maps_fn)
    res['nms_step_s'] = t(lambda: batched_nms(
        cands.bboxes, cands.scores, cands.labels, plain_cfg))
    res['odam_nms_step_s'] = t(lambda: batched_odam_nms(
        cands.bboxes, cands.scores, cands.labels, maps, odam_cfg))
    res['ratio_pipeline'] = res['pipeline_odam_s'] / res['pipeline_nms_s']
    if args.device.startswith('cuda'):
        # the same pipeline without CUDA graphs, and the graphs' maps
        eager_cfg = dict(odam_cfg, cuda_graph=False)
        res['pipeline_odam_eager_s'] = t(lambda: predict(eager_cfg))
        res['ratio_pipeline_eager'] = \
            res['pipeline_odam_eager_s'] / res['pipeline_nms_s']
        from mmdet_odam.explainers.dense import candidate_priors
        from mmdet_odam.explainers.reversed_head import reversed_head_maps
        if record is not None:  # the maps step as predict runs it: graphs
            pri = candidate_priors(head, feats, cands.level_ids,
                                   cands.loc_inds)

            def maps_graph():
                with torch.no_grad():
                    return reversed_head_maps(
                        head, feats, record, rows, pri, size,
                        meta['batch_input_shape'], cuda_graph=True)
            res['maps_graph_s'] = t(maps_graph)
        a, b = predict(odam_cfg), predict(eager_cfg)
        res['graph_same_kept'] = bool(torch.equal(a.cand_inds, b.cand_inds))
        res['graph_maps_max_rel_diff'] = float(
            (a.odam_maps - b.odam_maps).abs().max() /
            b.odam_maps.abs().max().clamp(min=1e-30))
    return res


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmdet.structures import DetDataSample
    model, odam_cfg = build(args)
    dev = torch.device(args.device)
    sync = (torch.cuda.synchronize if dev.type == 'cuda' else lambda: None)
    h, w = args.shape
    torch.manual_seed(0)
    img = (torch.rand(3, h, w) * 255).to(dev)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.))
    data = model.data_preprocessor(
        dict(inputs=[img], data_samples=[DetDataSample(metainfo=meta)]))
    inputs, samples = data['inputs'], data['data_samples']
    with torch.no_grad():
        feats = model.extract_feat(inputs)
    results = []
    print(f'device {args.device} ({args.threads} thread(s)), input {h}x{w}, '
          f"weights {args.checkpoint or 'random'}")
    print(f"{'cands':>6} {'kept nms/odam':>14} {'pipe NMS':>9} "
          f"{'pipe Odam':>10} {'ratio':>6} {'forward':>8} {'maps':>8} "
          f"{'NMS':>7} {'OdamNMS':>8} {'cpu ratio':>9}  (ms)")
    for n in args.num_candidates:
        r = run_one(model, odam_cfg, inputs, samples, feats, n, args, sync)
        results.append(r)
        print(f"{r['candidates']:6d} {r['kept_nms']:6d}/{r['kept_odam']:<7d}"
              f" {r['pipeline_nms_s'] * 1e3:9.1f}"
              f" {r['pipeline_odam_s'] * 1e3:10.1f}"
              f" {r['ratio_pipeline']:5.2f}x {r['forward_s'] * 1e3:8.1f}"
              f" {r['maps_s'] * 1e3:8.1f} {r['nms_step_s'] * 1e3:7.1f}"
              f" {r['odam_nms_step_s'] * 1e3:8.1f}"
              f" {r['ratio_cpu']:8.2f}x")
    print('ratio = pipeline Odam-NMS / pipeline NMS, wall time (target <= '
          '1.3x; paper 1.56x on an RTX 3090); cpu ratio: the same from the '
          'process CPU time (median of the interleaved pairs)')
    for r in results:
        if 'pipeline_odam_eager_s' in r:
            print(f"{r['candidates']:6d} cand.: maps step with CUDA graphs "
                  f"{r.get('maps_graph_s', float('nan')) * 1e3:.1f} ms; "
                  "pipeline without CUDA graphs "
                  f"{r['pipeline_odam_eager_s'] * 1e3:.1f} ms "
                  f"({r['ratio_pipeline_eager']:.2f}x); graph maps == eager "
                  f"maps: same kept {r['graph_same_kept']}, max rel. diff "
                  f"{r['graph_maps_max_rel_diff']:.1e}")
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(args.out)))
        with os.fdopen(fd, 'w') as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.out)
    return results


if __name__ == '__main__':
    main()
