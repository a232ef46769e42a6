# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Strip a training checkpoint for release (as mmdet's publish_model).

Keeps ``state_dict`` and a small ``meta`` of plain Python types (so the file
loads with ``torch.load(..., weights_only=True)``), drops optimizer,
scheduler and message-hub state, writes atomically and checks the size::

    python tools/model_converters/publish_model.py work_dirs/x/iter_1500.pth \
        checkpoints/model.pth --max-mb 25 [--half]

``--half`` stores floating-point tensors as float16 (half the size;
``load_checkpoint`` casts them back to the model's dtype).

The input is read with ``weights_only=True`` too (importing ``mmdet_odam``
allow-lists exactly the globals mmengine's own checkpoints hold), so a
checkpoint carrying an arbitrary pickled object is refused.
"""
import argparse
import os
import os.path as osp
import tempfile

import torch

import mmdet_odam  # noqa: F401  (weights_only allow-list for mmengine)


def publish(src: str, dst: str, classes=('person', ), max_mb: float = 25.,
            half: bool = False) -> int:
    """Write the stripped checkpoint (float tensors as float16 with
    ``half``); returns its size in bytes."""
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint {src} does not exist')
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    sd = ckpt.get('state_dict', ckpt)
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v
              for k, v in sd.items()}
    old = ckpt.get('meta', {}) or {}
    meta = dict(
        iter=int(old.get('iter', -1)),
        dataset_meta=dict(classes=tuple(classes),
                          palette=[(220, 20, 60)] * len(classes)),
        mmdet_version=str(old.get('mmdet_version', '3.3.0')),
        torch_version=str(torch.__version__))
    d = osp.dirname(osp.abspath(dst))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix='.tmp')
    os.close(fd)
    try:
        torch.save(dict(meta=meta, state_dict=sd), tmp)
        size = osp.getsize(tmp)
        if size > max_mb * 2**20:
            raise ValueError(f'{dst}: {size / 2**20:.1f} MB exceeds '
                             f'--max-mb {max_mb}')
        torch.load(tmp, weights_only=True)  # must load with weights_only
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return size


def main():
    p = argparse.ArgumentParser(description='Strip a checkpoint for release')
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--max-mb', type=float, default=25.)
    p.add_argument('--half', action='store_true',
                   help='store floating-point tensors as float16')
    args = p.parse_args()
    size = publish(args.src, args.dst, max_mb=args.max_mb, half=args.half)
    print(f'{args.dst}: {size / 2**20:.2f} MB')


if __name__ == '__main__':
    main()
