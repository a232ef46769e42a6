"""Training-iteration cost of Odam-Train: time and peak memory of
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

Object discrimination of trained detectors (paper Fig. 4 / Tab. 3) is
measured by ``tools/analysis_tools/object_discrimination.py``.
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
    args = p.parse_args(argv)
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
