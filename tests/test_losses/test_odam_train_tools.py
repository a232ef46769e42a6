"""Odam-Train through tools/train.py: --resume from a mid-run checkpoint
continues with the same Odam-Train losses and weights as an uninterrupted
run, and a 2-process CPU run (dist_train.sh, gloo) trains with the losses."""
import glob
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

TINY = 'configs/odam_train/fcos_tiny_odam-train_coco-person.py'
NO_VAL = ['--cfg-options', '+train_cfg.val_begin=100']


def _run(args, cwd, timeout=300, **env):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable, **env)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f'{args} failed ({proc.returncode}):\n{out[-4000:]}')
    return out


def _scalars(work_dir):
    """{iter: {key: value}} of the train logs of every run in ``work_dir``."""
    out = {}
    for path in sorted(glob.glob(str(work_dir / '*' / 'vis_data' /
                                     'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    out[rec['iter']] = rec
    return out


def _weights(path):
    from mmdet_odam.utils import load_from_local
    return load_from_local(str(path), map_location='cpu')['state_dict']


def test_resume_continues_with_the_same_odam_losses(repo_root, tmp_path):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    _run([sys.executable, 'tools/train.py', TINY, '--work-dir',
          str(straight), *NO_VAL], repo_root)
    out = _run([sys.executable, 'tools/train.py', TINY, '--work-dir',
                str(resumed), '--resume', str(straight / 'iter_3.pth'),
                *NO_VAL], repo_root)
    assert 'resumed epoch: 0, iter: 3' in out
    a, b = _scalars(straight), _scalars(resumed)
    assert sorted(a) == [1, 2, 3, 4, 5, 6] and sorted(b) == [4, 5, 6]
    nonzero = 0
    for it in (4, 5, 6):
        for key in ('loss', 'loss_odam_con', 'loss_odam_sep'):
            assert b[it][key] == pytest.approx(a[it][key], rel=1e-4,
                                               abs=1e-6), (it, key)
        nonzero += a[it]['loss_odam_sep'] > 0
    assert nonzero >= 1  # the comparison covers the Odam-Train losses
    wa, wb = _weights(straight / 'iter_6.pth'), _weights(resumed /
                                                         'iter_6.pth')
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], msg=k)


def test_two_process_training_with_odam_losses(repo_root, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    work = tmp_path / 'dist'
    _run(['bash', 'tools/dist_train.sh', TINY, '2', '--work-dir', str(work),
          '--cfg-options', 'train_cfg.max_iters=2', '+train_cfg.val_begin=100'],
         repo_root, PORT=port)
    logs = _scalars(work)
    assert sorted(logs) == [1, 2]
    assert all('loss_odam_sep' in r and r['loss_odam_sep'] >= 0
               for r in logs.values())
    log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
    assert 'Distributed training: True' in log
