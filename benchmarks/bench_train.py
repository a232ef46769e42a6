"""Training-iteration cost of Odam-Train (issue 5): time and peak memory of
one SGD step (forward + backward + update) with and without the losses.

Model: the Odam-Train FCOS MobileNetV2-FPN config (``--config``: any
Odam-Train config, e.g. the Faster R-CNN one; random init, no weights
loaded), the same model with ``loss_odam=None`` as baseline. Input: a batch
of synthetic crowd images at the generated scenes' size (640x480 by
default) with ``--objects`` overlapping person boxes each, so the assigner
gives crowd-like positive counts. Each variant runs in its own process so
peak memory (CUDA: ``max_memory_allocated``; CPU: peak RSS) is separate;
the time ratio comes from a third process that alternates steps of both
(median of per-step ratios), so a busy shared machine affects both alike.

    python benchmarks/bench_train.py [--iters 5] [--device cpu] [--out f.json]

With ``--discrimination NAME=CONFIG:CHECKPOINT ...`` it instead measures
object discrimination of trained detectors on their config's val set (paper
Fig. 4 / Tab. 3): pre-NMS candidates with score > ``--score-thr`` are
matched to GT boxes (IoU >= 0.5); their ``cls`` ODAM maps (batched,
no smoothing, grid = padded input / 8) give the mean Pearson correlation
between candidates of the same object, between candidates of different
objects whose boxes overlap with IoU > 0.5, and the ODI (box) of each
candidate w.r.t. its object.
"""
import argparse
import ast
import json
import multiprocessing as mp
import os
import resource
import sys
import time

import torch

DEFAULT_CONFIG = 'configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py'


def synthetic_batch(batch_size, size, objects, device, seed=0):
    """Images (B, 3, H, W) in 0..255 and DetDataSamples with GT boxes in
    crowd-like clusters (neighbours overlap with IoU ~0.2-0.6)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    w, h = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g).float())
        bw = torch.empty(objects).uniform_(40, 110, generator=g)
        bh = bw * torch.empty(objects).uniform_(1.8, 2.8, generator=g)
        x0 = torch.empty(objects).uniform_(0, 1, generator=g) * (w - bw)
        y0 = torch.empty(objects).uniform_(0, 1, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, (y0 + bh).clamp(max=h)], 1)
        ds = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            batch_input_shape=(h, w), scale_factor=(1., 1.)))
        gi = InstanceData()
        gi.bboxes = boxes.to(device)
        gi.labels = torch.zeros(objects, dtype=torch.long, device=device)
        ds.gt_instances = gi
        samples.append(ds)
    return torch.stack(inputs).to(device), samples


def _build(variant, args):
    """Model, optimizer and one preprocessed synthetic batch."""
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.getcwd())
    import mmdet_odam  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    owner = cfg.model.roi_head if 'roi_head' in cfg.model else \
        cfg.model.bbox_head
    if variant == 'baseline':
        owner.loss_odam = None
    else:
        for kv in args.loss_odam or []:
            k, v = kv.split('=', 1)
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                pass  # a plain string such as reference=image
            owner.loss_odam[k] = v
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(args.device)
    model.init_weights()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    inputs, samples = synthetic_batch(args.batch_size, tuple(args.size),
                                      args.objects, args.device)
    data = model.data_preprocessor(
        dict(inputs=list(inputs), data_samples=samples), True)
    return model, opt, data


def _step(model, opt, data, cuda):
    """One timed SGD step; returns (wall seconds, process CPU seconds,
    losses)."""
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    out = model.loss(data['inputs'], data['data_samples'])
    loss = sum(v for k, v in out.items() if 'loss' in k)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0, time.process_time() - c0,
            {k: float(v) for k, v in out.items()})


def _run(variant, args, queue):
    """Peak memory (and times) of one variant in a fresh process."""
    model, opt, data = _build(variant, args)
    cuda = args.device.startswith('cuda')
    times = []
    for it in range(args.warmup + args.iters):
        t, _, losses = _step(model, opt, data, cuda)
        if it >= args.warmup:
            times.append(t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put(dict(variant=variant, iter_s=sorted(times)[len(times) // 2],
                   iter_s_all=times, peak_mem_mib=peak, last_losses=losses))


def _interleaved(args, queue):
    """Both variants in one process, steps alternating, so that the load of
    a shared machine hits both alike; per-pair time ratios."""
    cuda = args.device.startswith('cuda')
    runs = {v: _build(v, args) for v in ('baseline', 'odam_train')}
    times = {v: [] for v in runs}
    cpu = {v: [] for v in runs}  # process CPU time (one thread: less noise)
    for it in range(args.warmup + args.iters):
        for v, (model, opt, data) in runs.items():
            t, c, _ = _step(model, opt, data, cuda)
            if it >= args.warmup:
                times[v].append(t)
                cpu[v].append(c)
    ratios = [o / b for o, b in zip(times['odam_train'], times['baseline'])]
    cpu_ratios = [o / b for o, b in zip(cpu['odam_train'], cpu['baseline'])]
    queue.put(dict(times=times, ratios=ratios, cpu_times=cpu,
                   cpu_ratios=cpu_ratios))


def _pearson(a, b):
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)


def discrimination(config, checkpoint, device='cpu', score_thr=0.1,
                   max_cands=100, max_images=None):
    """Object-discrimination statistics of one trained FCOS-like detector.

    Returns:
        dict: ``corr_same`` / ``corr_diff_iou50`` (mean Pearson over pairs),
        their pair counts, ``odi`` (mean over matched candidates), images.
    """
    import numpy as np
    from mmdet.apis import init_detector
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from mmdet_odam.evaluation.functional.odi import odi_box
    from mmdet_odam.explainers.dense import dense_candidate_maps
    init_default_scope('mmdet')
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    model = init_detector(cfg, checkpoint, device=device)
    head = model.bbox_head
    ds_cfg = cfg.test_dataloader.dataset
    from mmdet.registry import DATASETS
    dataset = DATASETS.build(ds_cfg)
    same, diff, odis = [], [], []
    n_img = len(dataset) if max_images is None else min(max_images,
                                                        len(dataset))
    for i in range(n_img):
        data = pseudo_collate([dataset[i]])
        data = model.data_preprocessor(data, False)
        sample = data['data_samples'][0]
        gt = sample.gt_instances.bboxes
        gt = gt.tensor if hasattr(gt, 'tensor') else gt
        # the test pipeline loads annotations after Resize: original pixels
        sx, sy = sample.metainfo.get('scale_factor', (1., 1.))
        gt = gt * gt.new_tensor([sx, sy, sx, sy])
        if len(gt) < 2:
            continue
        with torch.no_grad():
            feats = model.extract_feat(data['inputs'])
            cls_scores, bbox_preds, ctrs = head(feats)
        lv, loc, scores, boxes = [], [], [], []
        pts = head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], device=gt.device)
        for l, (c, b, t) in enumerate(zip(cls_scores, bbox_preds, ctrs)):
            sc = (c[0, 0].sigmoid() * t[0, 0].sigmoid()).flatten()
            k = (sc > score_thr).nonzero().squeeze(1)
            d = b[0].flatten(1)[:, k].t()  # eval mode: pixels already
            lv.append(torch.full_like(k, l))
            loc.append(k)
            scores.append(sc[k])
            boxes.append(head.bbox_coder.decode(pts[l][k], d))
        lv, loc = torch.cat(lv), torch.cat(loc)
        scores, boxes = torch.cat(scores), torch.cat(boxes)
        order = scores.argsort(descending=True)[:max_cands]
        lv, loc, scores, boxes = lv[order], loc[order], scores[order], \
            boxes[order]
        if len(scores) < 2:
            continue
        iou_gt = bbox_overlaps(boxes, gt)
        best, obj = iou_gt.max(1)
        ok = best >= 0.5
        lv, loc, boxes, obj = lv[ok], loc[ok], boxes[ok], obj[ok]
        if len(obj) < 2:
            continue
        pad = sample.metainfo['batch_input_shape']
        size = (pad[0] // 8, pad[1] // 8)
        maps = dense_candidate_maps(
            head, feats, torch.zeros_like(lv), lv, loc,
            torch.zeros_like(lv), target='cls', out_size=size,
            smoothing='none').detach()
        flat = maps.flatten(1)
        corr = _pearson(flat[:, None], flat[None])
        iou_pp = bbox_overlaps(boxes, boxes)
        triu = torch.triu(torch.ones_like(iou_pp, dtype=torch.bool), 1)
        same_obj = obj[:, None] == obj[None]
        same.append(corr[triu & same_obj])
        diff.append(corr[triu & ~same_obj & (iou_pp > 0.5)])
        gt_grid = gt / 8.
        for j in range(len(obj)):
            odis.append(odi_box(maps[j], gt_grid, int(obj[j])))
    same, diff = torch.cat(same), torch.cat(diff)
    val_loss = _val_odam_loss(config, checkpoint, dataset, n_img, device)
    return dict(
        **val_loss,
        corr_same=float(same.mean()) if len(same) else float('nan'),
        pairs_same=len(same),
        corr_diff_iou50=float(diff.mean()) if len(diff) else float('nan'),
        pairs_diff_iou50=len(diff),
        odi=float(np.mean(odis)) if odis else float('nan'),
        candidates=len(odis), images=n_img)


def _val_odam_loss(config, checkpoint, dataset, n_img, device):
    """Mean Odam-Train losses (weight 1, paper defaults) on the val images,
    i.e. the training objective on held-out scenes."""
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.type = 'OdamFCOSHead'
    cfg.model.bbox_head.loss_odam = dict(type='OdamTrainLoss')
    model = init_detector(cfg, checkpoint, device=device)
    model.train()  # FCOS training-mode outputs; backbone BN stays frozen
    con, sep = [], []
    for i in range(n_img):
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
        sample = data['data_samples'][0]
        sx, sy = sample.metainfo.get('scale_factor', (1., 1.))
        gi = sample.gt_instances
        b = gi.bboxes.tensor if hasattr(gi.bboxes, 'tensor') else gi.bboxes
        gi.bboxes = b * b.new_tensor([sx, sy, sx, sy])
        if len(gi.bboxes) < 2:
            continue
        out = model.loss(data['inputs'], data['data_samples'])
        con.append(float(out['loss_odam_con']))
        sep.append(float(out['loss_odam_sep']))
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    return dict(val_loss_odam_con=mean(con), val_loss_odam_sep=mean(sep))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG)
    p.add_argument('--size', type=int, nargs=2, default=(640, 480),
                   metavar=('W', 'H'))
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--objects', type=int, default=12)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--loss-odam', nargs='*', metavar='KEY=VALUE',
                   help='override OdamTrainLoss options, e.g. '
                   'max_per_object=6')
    p.add_argument('--out', default=None, help='write results as JSON')
    p.add_argument('--discrimination', nargs='+', metavar='NAME=CFG:CKPT',
                   help='measure object discrimination of trained models '
                   'instead of timing')
    p.add_argument('--score-thr', type=float, default=0.1)
    p.add_argument('--max-images', type=int, default=None)
    args = p.parse_args(argv)
    if args.discrimination:
        torch.set_num_threads(args.threads)
        import mmdet_odam  # noqa: F401
        res = {}
        for spec in args.discrimination:
            name, rest = spec.split('=', 1)
            config, ckpt = rest.split(':', 1)
            for path in (config, ckpt):
                if not os.path.isfile(path):
                    raise FileNotFoundError(f'not found: {path}')
            res[name] = discrimination(config, ckpt, args.device,
                                       args.score_thr,
                                       max_images=args.max_images)
            print(name, json.dumps(res[name]))
        if args.out:
            tmp = args.out + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(res, f, indent=1)
            os.replace(tmp, args.out)
        return res
    if not os.path.isfile(args.config):
        raise FileNotFoundError(f'config not found: {args.config}')
    ctx = mp.get_context('spawn')
    res = {}

    def in_process(target, *a):
        q = ctx.Queue()
        proc = ctx.Process(target=target, args=(*a, args, q))
        proc.start()
        r = q.get()
        proc.join()
        return r

    for variant in ('baseline', 'odam_train'):
        r = in_process(_run, variant)
        res[variant] = r
        print(f"{variant:>10}: {r['iter_s']:.3f} s/iter (median of "
              f"{args.iters}, own process), peak mem "
              f"{r['peak_mem_mib']:.0f} MiB, losses "
              f"{json.dumps({k: round(v, 4) for k, v in r['last_losses'].items()})}")
    inter = in_process(_interleaved)
    res['interleaved'] = inter
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    ratio = med(inter['ratios'])
    res['ratio'] = ratio
    print(f"interleaved: baseline {med(inter['times']['baseline']):.3f} "
          f"s/iter, odam_train {med(inter['times']['odam_train']):.3f} "
          f"s/iter; time ratio (median of per-step ratios) {ratio:.2f}x "
          f"(target <= 1.5x)")
    res['cpu_ratio'] = med(inter['cpu_ratios'])
    print(f"interleaved, process CPU time: baseline "
          f"{med(inter['cpu_times']['baseline']):.3f} s/iter, odam_train "
          f"{med(inter['cpu_times']['odam_train']):.3f} s/iter; ratio "
          f"(median of per-step ratios) {res['cpu_ratio']:.2f}x (one "
          "thread: CPU time is what a busy machine disturbs least)")
    res['settings'] = dict(vars(args), torch=torch.__version__)
    if args.out:
        tmp = args.out + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.out)
    return res


if __name__ == '__main__':
    main()
