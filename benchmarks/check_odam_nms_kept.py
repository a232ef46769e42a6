"""Odam-NMS on real images: record, or compare with a record, the kept
detections (and their maps) of the head's Odam-NMS predict.

For every image: the candidates' count, the kept candidates
(``pred_instances.cand_inds``), their scores and ODAM maps; and, from the
maps of all candidates that reach ``batched_odam_nms``, the kept sets of a
(corr_low, corr_high) sweep (what ``tools/analysis_tools/sweep_odam_nms.py``
evaluates). ``--compare`` checks that a new code path keeps exactly the
same candidates (config thresholds and every sweep point) and reports the
largest map difference.

Example::

    python benchmarks/check_odam_nms_kept.py \
        configs/pretrained/fcos_mobilenetv2_crowd-person.py \
        checkpoints/fcos_mobilenetv2_crowd-person.pth \
        --images 'demo/images/*.jpg' 'demo/crowd_val_small/val/images/*' \
        --save work_dirs/kept_ref.pth
    python benchmarks/check_odam_nms_kept.py ... --compare \
        work_dirs/kept_ref.pth
"""
import argparse
import glob
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import mmdet_odam  # noqa: E402,F401

odam_nms_mod = sys.modules['mmdet_odam.nms.odam_nms']
SWEEP = [(lo, hi) for lo in (0.0, 0.1, 0.2, 0.3, 0.4)
         for hi in (0.6, 0.7, 0.8, 0.9, 1.0)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='weights (default: random, seed 0)')
    p.add_argument('--images', nargs='+', required=True, help='globs')
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--score-thr', type=float, default=None)
    p.add_argument('--nms-pre', type=int, default=None)
    p.add_argument('--save', default=None)
    p.add_argument('--compare', default=None)
    p.add_argument('--threads', type=int, default=1)
    return p.parse_args(argv)


def build(args):
    from mmengine.config import Config
    from mmdet.apis import init_detector
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    tc = cfg.model.test_cfg
    tc.nms = dict(type='odam_nms', iou_threshold=tc.nms.get(
        'iou_threshold', 0.5), corr_low=tc.nms.get('corr_low', 0.2),
        corr_high=tc.nms.get('corr_high', 0.8),
        corr_type=tc.nms.get('corr_type', 'pearson'))
    if cfg.model.bbox_head.type == 'FCOSHead':
        cfg.model.bbox_head.type = 'OdamFCOSHead'
    if args.score_thr is not None:
        tc.score_thr = args.score_thr
    if args.nms_pre is not None:
        tc.nms_pre = args.nms_pre
    torch.manual_seed(0)
    model = init_detector(cfg, args.checkpoint, device='cpu')
    return model.eval()


def run(model, paths):
    """Per image: dict of the candidates and kept sets."""
    from mmdet.apis import inference_detector
    real = odam_nms_mod.batched_odam_nms
    out = {}
    for path in paths:
        captured = []

        def capture(boxes, scores, idxs, maps, nms_cfg):
            captured.append((boxes, scores, idxs, maps))
            return real(boxes, scores, idxs, maps, nms_cfg)

        odam_nms_mod.batched_odam_nms = capture
        try:
            with torch.no_grad():
                res = inference_detector(model, path).pred_instances
        finally:
            odam_nms_mod.batched_odam_nms = real
        rec = dict(kept=res.cand_inds.clone(), scores=res.scores.clone(),
                   maps=res.odam_maps.clone(), sweep={}, num=0)
        if captured:
            boxes, scores, idxs, maps = captured[0]
            rec['num'] = boxes.shape[0]
            for lo, hi in SWEEP:
                cfg = dict(type='odam_nms', iou_threshold=0.5,
                           corr_low=lo, corr_high=hi)
                rec['sweep'][(lo, hi)] = real(boxes, scores, idxs, maps,
                                              cfg)[1].clone()
        out[osp.basename(path)] = rec
    return out


def compare(ref, new):
    """Lines describing the differences; empty when the kept sets agree."""
    bad, worst = [], 0.0
    for name, r in ref.items():
        n = new.get(name)
        if n is None:
            bad.append(f'{name}: missing')
            continue
        if not torch.equal(r['kept'], n['kept']):
            bad.append(f"{name}: kept {r['kept'].tolist()} -> "
                       f"{n['kept'].tolist()}")
            continue
        for key, k in r['sweep'].items():
            if not torch.equal(k, n['sweep'].get(key, torch.empty(0))):
                bad.append(f'{name}: sweep {key} differs')
        if r['maps'].numel():
            d = (r['maps'] - n['maps']).abs().amax((1, 2)) / \
                r['maps'].abs().amax((1, 2)).clamp_min(1e-30)
            worst = max(worst, float(d.max()))
    return bad, worst


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(p for g in args.images for p in glob.glob(g))
    if args.max_images:
        paths = paths[:args.max_images]
    if not paths:
        raise ValueError(f'no image matches {args.images}')
    model = build(args)
    res = run(model, paths)
    cands = sum(r['num'] for r in res.values())
    kept = sum(len(r['kept']) for r in res.values())
    print(f'{len(res)} images, {cands} candidates, {kept} kept')
    if args.save:
        os.makedirs(osp.dirname(osp.abspath(args.save)), exist_ok=True)
        torch.save(res, args.save)
    if args.compare:
        bad, worst = compare(torch.load(args.compare, weights_only=True), res)
        print(f'max map difference / map max: {worst:.2e}')
        if bad:
            print('\n'.join(bad))
            raise SystemExit(f'{len(bad)} differences')
        print(f'same kept detections on all {len(res)} images and '
              f'{len(SWEEP)} sweep points')


if __name__ == '__main__':
    main()
