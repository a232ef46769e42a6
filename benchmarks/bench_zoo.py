"""Explain / predict time per detector family of mmdet's zoo, one CPU thread.

Each family of :data:`mmdet_odam.testing.ZOO` is built from its mmdet config
at mmdet's own sizes (real backbones and heads, random weights; no
pretrained weights, test ``score_thr`` 0) unless ``--tiny`` is given (the
contract test's shrunk models), and run on one COCO photograph resized to
``--size`` (longer side; mmdet's test pipeline). Per family, in one
process, interleaved and repeated ``--repeats`` times (medians):

* ``predict``: ``model.predict`` under ``torch.no_grad()``;
* ``explain``: ``build_explainer(model, targets=...).explain(...)`` of
  ``--detections`` detections x the targets (default the five scalar
  targets), after one untimed warm-up call (the first call of an adapter
  also verifies its detections against ``predict``).

The ratio explain / predict is compared with the target: <= 3x where the
family takes a fast path, <= 5x on the generic path. For a family above its
target, the cost of the explained part is shown: the forward with
gradients from the explained layer (``predict`` with that layer's outputs as
leaves) and ONE backward of the detections' summed scores to that layer,
each against ``predict`` (deformable convolutions back-propagated as the
explainers do it). The generic path needs one such backward per detection
and target (batched where the ops allow it).

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_zoo.py --families RetinaNet \\
        FCOS --size 320 --repeats 3 --json work_dirs/bench_zoo.json
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from mmdet_odam.testing import ZOO, build_zoo_model, select  # noqa: E402
from mmdet_odam.testing.zoo import coco_image  # noqa: E402

BASE_TARGETS = ['cls', 'left', 'top', 'right', 'bottom']
TARGET_FAST, TARGET_GENERIC = 3.0, 5.0


def split_list(values):
    """``['a b', 'c,d', 'Cascade R-CNN']`` -> ``['a', 'b', 'c', 'd',
    'Cascade R-CNN']`` (a family name with spaces stays whole)."""
    out = []
    for item in values:
        for part in item.split(','):
            part = part.strip()
            out += [part] if part in ZOO else part.split()
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--families', nargs='+', default=None,
                   help=f'zoo families (default all: {", ".join(ZOO)})')
    p.add_argument('--size', type=int, default=320,
                   help='test input scale (longer side, pixels)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--detections', type=int, default=10)
    p.add_argument('--targets', nargs='+', default=BASE_TARGETS)
    p.add_argument('--tiny', action='store_true',
                   help="the contract test's shrunk models")
    p.add_argument('--json', default=None, help='write the results here')
    args = p.parse_args(argv)
    args.families = split_list(args.families) if args.families else None
    args.targets = split_list(args.targets)
    return args


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def plan(model, targets):
    """(adapter, path, exact, layer) of the default call, per target."""
    from mmdet_odam.apis import explain_support
    rows = explain_support(model, targets=targets).rows
    return [dict(target=r['target'], adapter=r['adapter'], path=r['path'],
                 exact=r['exact'], layer=r['layer']) for r in rows]


def layer_module(model, layer):
    """The module whose outputs the explained maps use."""
    if layer in (None, 'fpn_level', 'neck', 'roi', 'roi_features'):
        name = 'neck' if hasattr(model, 'neck') else 'backbone'
        return getattr(model, name)
    return model.get_submodule(layer)


def explained_part_cost(model, inputs, samples, layer, n):
    """Seconds of (forward with grad from ``layer``, one backward of the
    first ``n`` detections' summed scores to it)."""
    from mmdet_odam.adapters.deform_conv import add_deform_conv_hooks
    from mmdet_odam.explainers.base import HookList
    from mmdet_odam.explainers.generic import keep_head_grads
    leaves = []

    def hook(mod, inp, out):
        outs = [out] if torch.is_tensor(out) else list(out)
        leaves[:] = [o.detach().requires_grad_(True) for o in outs]
        return leaves[0] if torch.is_tensor(out) else type(out)(leaves)

    hooks = HookList()  # the explainers' backward of deformable layers
    add_deform_conv_hooks(model, hooks)
    hooks.add(layer_module(model, layer).register_forward_hook(hook))
    try:
        with torch.enable_grad(), keep_head_grads():
            t_fwd, res = timed(lambda: model.predict(inputs, samples))
            y = res[0].pred_instances.scores[:n].sum()
            if not y.requires_grad:
                return t_fwd, None
            t_bwd, _ = timed(lambda: torch.autograd.grad(
                y, leaves, allow_unused=True))
    finally:
        hooks.remove()
    return t_fwd, t_bwd


def bench_family(entry, args):
    """One family's figures (dict)."""
    from mmdet_odam.apis import prepare_inputs
    from mmdet_odam.explainers import build_explainer
    scale = (args.size, args.size)
    model = build_zoo_model(entry, shrink=args.tiny, input_scale=scale)
    inputs, samples = prepare_inputs(model, coco_image(size=None))
    explainer = build_explainer(model, targets=args.targets)
    kw = dict(score_thr=0.0, topk=args.detections)
    n = len(explainer.explain(inputs, samples, **kw)[0])  # warm-up
    if n < args.detections:  # a ratio of fewer detections is no figure
        raise RuntimeError(f'{n} detections to explain, '
                           f'{args.detections} asked: no ratio')
    t_pred, t_expl = [], []
    for _ in range(args.repeats):
        with torch.no_grad():
            t_pred.append(timed(lambda: model.predict(inputs, samples))[0])
        dt, exp = timed(lambda: explainer.explain(inputs, samples, **kw))
        t_expl.append(dt)
    rows = plan(model, args.targets)
    fast = any(r['adapter'] != 'generic' for r in rows)
    pred, expl = statistics.median(t_pred), statistics.median(t_expl)
    out = dict(family=entry.name, config=entry.config,
               input_shape=list(inputs.shape[2:]),
               params_m=sum(p.numel() for p in model.parameters()) / 1e6,
               detections=len(exp[0]), targets=args.targets,
               predict_s=pred, explain_s=expl, ratio=expl / pred,
               predict_runs=t_pred, explain_runs=t_expl, plan=rows,
               fast=fast, target=TARGET_FAST if fast else TARGET_GENERIC,
               second_stage=getattr(explainer, 'second_stage', None))
    out['meets_target'] = out['ratio'] <= out['target']
    if not out['meets_target']:
        fwd, bwd = explained_part_cost(model, inputs, samples,
                                       rows[0]['layer'], args.detections)
        out.update(forward_grad_s=fwd, backward_s=bwd)
    return out


def fmt_row(r):
    paths = sorted({f"{p['adapter']}/{p['path']}" for p in r['plan']})
    if r.get('second_stage') not in (None, 'autograd'):
        paths = [f"{p} ({r['second_stage']})" for p in paths]
    why = ''
    if 'forward_grad_s' in r:
        bwd = r['backward_s']
        why = (f"fwd+grad {r['forward_grad_s'] / r['predict_s']:.2f}x, "
               + ('1 backward detached' if bwd is None else
                  f"1 backward {bwd / r['predict_s']:.2f}x"))
    spread = max(r['explain_runs']) - min(r['explain_runs'])
    return (f"| {r['family']} | {'x'.join(map(str, r['input_shape']))} | "
            f"{r['params_m']:.1f} | {r['predict_s'] * 1e3:.0f} | "
            f"{r['explain_s'] * 1e3:.0f} (±{spread * 5e2:.0f}) | "
            f"{r['ratio']:.2f} | {r['target']:.0f} | "
            f"{'yes' if r['meets_target'] else 'NO'} | {', '.join(paths)} | "
            f"{why} |")


HEADER = ('| family | input | params (M) | predict (ms) | explain (ms, '
          '±half range) | ratio | target | met | path | explained part |\n'
          '|---|---|---|---|---|---|---|---|---|---|')


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    from mmdet.utils import register_all_modules
    register_all_modules()
    results, errors = [], {}
    print(f'{args.detections} detections x {len(args.targets)} targets, '
          f'{args.repeats} repeats, 1 thread, '
          f"{'shrunk' if args.tiny else 'full-size'} models\n{HEADER}",
          flush=True)
    for entry in select(args.families):
        try:
            r = bench_family(entry, args)
        except Exception as e:  # noqa: BLE001  (report and go on)
            errors[entry.name] = f'{type(e).__name__}: {e}'
            print(f'| {entry.name} | error: {errors[entry.name][:200]} |',
                  flush=True)
            continue
        results.append(r)
        print(fmt_row(r), flush=True)
    if args.json:
        from mmdet_odam.utils import write_text_atomic
        write_text_atomic(args.json, json.dumps(
            dict(size=args.size, tiny=args.tiny, repeats=args.repeats,
                 detections=args.detections, targets=args.targets,
                 threads=1, results=results, errors=errors), indent=1))
    return 0 if not errors else 1


if __name__ == '__main__':
    sys.exit(main())
