"""Backward of one deformable convolution: mmcv's against torch ops.

The explainers back-propagate mmcv's ``DeformConv2d`` through
:func:`mmdet_odam.paths.deform_conv.deform_conv2d_torch`
(:mod:`mmdet_odam.adapters.deform_conv`). This times, in one process and
interleaved, the input and offset gradient of one output position's
cotangent (what one explained detection and target sends through the
layer), the forward of mmcv's layer, and checks the two gradients agree.

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_deform_conv.py --channels 256 \\
        --size 32 40
"""
import argparse
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from mmdet_odam.paths.deform_conv import deform_conv2d_torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--channels', type=int, default=256)
    p.add_argument('--size', type=int, nargs=2, default=[32, 40],
                   metavar=('H', 'W'))
    p.add_argument('--repeats', type=int, default=5)
    return p.parse_args(argv)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    from mmcv.ops import DeformConv2d
    torch.manual_seed(0)
    c, (h, w) = args.channels, args.size
    layer = DeformConv2d(c, c, 3, padding=1).eval().requires_grad_(False)
    x = torch.randn(1, c, h, w, requires_grad=True)
    offset = (torch.randn(1, 18, h, w) * 2).requires_grad_(True)
    cot = torch.zeros(1, c, h, w)
    cot[0, :, h // 2, w // 2] = torch.randn(c)
    fwd, mmcv_bwd, torch_bwd = [], [], []
    for _ in range(args.repeats):
        dt, out = timed(lambda: layer(x, offset))
        fwd.append(dt)
        dt, g_mmcv = timed(lambda: torch.autograd.grad(out, [x, offset], cot))
        mmcv_bwd.append(dt)
        ref = deform_conv2d_torch(x, offset, layer.weight, layer.stride,
                                  layer.padding, layer.dilation)
        dt, g_torch = timed(lambda: torch.autograd.grad(ref, [x, offset],
                                                        cot))
        torch_bwd.append(dt)
    err = max(float((a - b).abs().max() / a.abs().max())
              for a, b in zip(g_mmcv, g_torch))
    f, m, t = (statistics.median(v) for v in (fwd, mmcv_bwd, torch_bwd))
    print(f'DeformConv2d {c}->{c} 3x3 on {h}x{w}, 1 thread, median of '
          f'{args.repeats}:\n'
          f'  mmcv forward   {f * 1e3:8.1f} ms\n'
          f'  mmcv backward  {m * 1e3:8.1f} ms = {m / f:.1f}x its forward\n'
          f'  torch backward {t * 1e3:8.1f} ms = {t / f:.1f}x; mmcv / torch '
          f'{m / t:.1f}x\n'
          f'  max gradient difference / max: {err:.1e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
