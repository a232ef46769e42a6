"""Time per explained detection of ODAM, Grad-CAM, Grad-CAM++ and D-RISE on
the same image and model (paper Sec. 3.1: ODAM ~2 ms per prediction, D-RISE
with 5000 masks ~3 min per image).

D-RISE costs one forward per mask, shared by all detections of the image, so
its time is linear in the number of masks: it is measured with
``--drise-masks`` masks and scaled to ``--drise-full`` (5000) masks.

Example::

    python benchmarks/bench_methods.py \
        configs/pretrained/fcos_mobilenetv2_crowd-person.py \
        checkpoints/fcos_mobilenetv2_crowd-person.pth --topk 5
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmdet_odam  # noqa: E402,F401
from mmdet_odam.utils import shared_dir  # noqa: E402

METHODS = ('odam', 'gradcam', 'gradcampp', 'drise')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='weights (default: random init; timing only)')
    p.add_argument('--img', default=None, help='image (default: first image '
                   'of coco_val2017_tiny80)')
    p.add_argument('--methods', nargs='+', default=list(METHODS),
                   choices=METHODS)
    p.add_argument('--topk', type=int, default=5,
                   help='detections explained (the same for every method)')
    p.add_argument('--drise-masks', type=int, default=100,
                   help='masks actually run (scaled to --drise-full)')
    p.add_argument('--drise-full', type=int, default=5000)
    p.add_argument('--drise-chunk', type=int, default=16)
    p.add_argument('--drise-normalize', choices=('coverage', 'raw'),
                   default='coverage',
                   help='D-RISE map (docs/baselines.md); its cost is the '
                   'same either way')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default=None, help='JSON file for the results')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules

    from mmdet_odam.explainers import build_explainer
    register_all_modules()
    img = args.img or sorted(
        (shared_dir() / 'data/coco_val2017_tiny80/images').glob('*.jpg'))[0]
    cfg = Config.fromfile(args.config)
    model = init_detector(cfg, args.checkpoint, device=args.device).eval()
    # the test pipeline without annotations
    from mmcv.transforms import Compose
    pipe = [t for t in cfg.test_dataloader.dataset.pipeline
            if t['type'] != 'LoadAnnotations']
    data = Compose(pipe)(dict(img_path=str(img), img_id=0))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        False)
    inputs, samples = batch['inputs'], batch['data_samples']
    odam = build_explainer(model, 'odam')
    ref = odam.explain(inputs, samples, score_thr=0.0, topk=args.topk)[0]
    boxes, labels = [ref.bboxes], [ref.labels]
    k = len(ref)
    res = dict(image=str(img), input_shape=list(inputs.shape[-2:]),
               detections=k, device=args.device,
               torch_threads=torch.get_num_threads(), methods={})
    for m in args.methods:
        kw = dict(n_masks=args.drise_masks, chunk_size=args.drise_chunk,
                  normalize=args.drise_normalize) if m == 'drise' else {}
        ex = build_explainer(model, m, **kw)
        reps = 1 if m == 'drise' else args.repeat
        ex.explain(inputs, samples, score_thr=0.0, boxes=boxes,
                   labels=labels)  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            ex.explain(inputs, samples, score_thr=0.0, boxes=boxes,
                       labels=labels)
        t = (time.perf_counter() - t0) / reps
        row = dict(s_per_image=t, s_per_detection=t / max(k, 1))
        if m == 'drise':
            scale = args.drise_full / args.drise_masks
            row.update(measured_masks=args.drise_masks,
                       scaled_to_masks=args.drise_full,
                       s_per_image=t * scale,
                       s_per_detection=t * scale / max(k, 1),
                       measured_s_per_image=t)
        res['methods'][m] = row
    if 'odam' in res['methods'] and 'drise' in res['methods']:
        res['drise_over_odam'] = (res['methods']['drise']['s_per_detection'] /
                                  res['methods']['odam']['s_per_detection'])
    lines = [f'image {osp.basename(str(img))}, input '
             f'{res["input_shape"]}, {k} detections, {args.device}, '
             f'{res["torch_threads"]} threads', '',
             '| method | ms / detection | s / image |', '| --- | --- | --- |']
    for m, r in res['methods'].items():
        name = m if m != 'drise' else \
            f'drise ({args.drise_full} masks, from {args.drise_masks})'
        lines.append(f'| {name} | {1000 * r["s_per_detection"]:.1f} | '
                     f'{r["s_per_image"]:.3f} |')
    if 'drise_over_odam' in res:
        lines.append(f'\nD-RISE / ODAM time per detection: '
                     f'{res["drise_over_odam"]:.0f}x')
    print('\n'.join(lines))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out + '.tmp', 'w') as f:
            json.dump(res, f, indent=1)
        os.replace(args.out + '.tmp', args.out)
    return res


if __name__ == '__main__':
    main()
