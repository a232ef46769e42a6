"""End-to-end runs of tools/train.py, tools/test.py and the dist_*.sh
launchers on the tiny FCOS / Faster R-CNN configs (CPU, gloo)."""
import glob
import json
import os
import os.path as osp
import pickle
import runpy
import socket
import subprocess
import sys

import pytest
import torch

FCOS = 'configs/tiny/fcos_tiny_coco-person.py'
FRCNN = 'configs/tiny/faster-rcnn_tiny_coco-person.py'


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable)
    env.update(extra)
    return env


def _run(args, cwd, ok=True, timeout=180, **env):
    proc = subprocess.run(
        args, cwd=cwd, env=_env(**env), capture_output=True, text=True,
        timeout=timeout)
    out = proc.stdout + proc.stderr
    if ok and proc.returncode != 0:
        pytest.fail(f'{args} failed ({proc.returncode}):\n{out[-4000:]}')
    if not ok and proc.returncode == 0:
        pytest.fail(f'{args} should have failed:\n{out[-4000:]}')
    return out


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _train(repo_root, work_dir, *opts, config=FCOS):
    return _run([
        sys.executable, 'tools/train.py', config, '--work-dir',
        str(work_dir), *opts
    ], cwd=repo_root)


def _metrics(work_dir):
    """Metrics of the (only) tools/test.py run logged in ``work_dir``."""
    files = glob.glob(osp.join(str(work_dir), '*', '*.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return {k: v for k, v in json.load(f).items() if k.startswith('coco')}


def _load(path):
    """Checkpoint through the plugin's loader (weights_only=True)."""
    from mmdet_odam.utils import load_from_local
    return load_from_local(str(path), map_location='cpu')


def _assert_same_predictions(a, b):
    assert [r['img_id'] for r in a] == [r['img_id'] for r in b]
    for ra, rb in zip(a, b):
        pa, pb = ra['pred_instances'], rb['pred_instances']
        assert len(pa['scores']) > 0
        torch.testing.assert_close(pa['bboxes'], pb['bboxes'])
        torch.testing.assert_close(pa['scores'], pb['scores'])
        assert torch.equal(pa['labels'], pb['labels'])


@pytest.fixture(scope='module')
def trained(repo_root, tmp_path_factory):
    """Tiny FCOS trained 6 iterations in one process (checkpoints at 3, 6)."""
    work = tmp_path_factory.mktemp('train')
    _train(repo_root, work)
    return work


def test_train_writes_loadable_checkpoints(trained):
    assert sorted(os.listdir(trained)).count('iter_6.pth') == 1
    ckpt = _load(trained / 'iter_6.pth')
    assert ckpt['meta']['iter'] == 6
    assert ckpt['meta']['dataset_meta']['classes'] == ('person', )
    assert any(k.startswith('backbone.stages.') for k in ckpt['state_dict'])
    # the message hub (numpy arrays in HistoryBuffers) came back too
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert len(loss.data[0]) == 6


def test_resume_reproduces_uninterrupted_run(repo_root, trained, tmp_path):
    out = _train(repo_root, tmp_path, '--resume',
                 str(trained / 'iter_3.pth'))
    assert 'resumed epoch: 0, iter: 3' in out
    resumed = _load(tmp_path / 'iter_6.pth')['state_dict']
    straight = _load(trained / 'iter_6.pth')['state_dict']
    assert resumed.keys() == straight.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], msg=k)
    # 3 fresh iterations changed the weights: the comparison has teeth
    first = _load(trained / 'iter_3.pth')['state_dict']
    assert not torch.equal(first['bbox_head.conv_reg.weight'],
                           straight['bbox_head.conv_reg.weight'])


def test_two_process_train_and_test_match_one_process(repo_root, tmp_path):
    port = _free_port()
    work = tmp_path / 'dist_train'
    _run([
        'bash', 'tools/dist_train.sh', FCOS, '2', '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=3'
    ], cwd=repo_root, PORT=port)
    ckpt = work / 'iter_3.pth'
    assert _load(ckpt)['meta']['iter'] == 3
    logs = glob.glob(str(work / '*' / '*.log'))
    log = open(logs[0]).read()
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert 'Distributed training: True' in log

    one, two = tmp_path / 'test1', tmp_path / 'test2'
    _run([
        sys.executable, 'tools/test.py', FCOS,
        str(ckpt), '--work-dir',
        str(one), '--out',
        str(one / 'preds.pkl')
    ], cwd=repo_root)
    _run([
        'bash', 'tools/dist_test.sh', FCOS,
        str(ckpt), '2', '--work-dir',
        str(two), '--out',
        str(two / 'preds.pkl')
    ], cwd=repo_root, PORT=_free_port())
    with open(one / 'preds.pkl', 'rb') as f:
        preds1 = pickle.load(f)
    with open(two / 'preds.pkl', 'rb') as f:
        preds2 = pickle.load(f)
    assert len(preds1) == 8  # the config's 8 test images, none lost
    _assert_same_predictions(preds1, preds2)
    m1, m2 = _metrics(one), _metrics(two)
    assert 'coco/bbox_mAP' in m1
    assert m1 == m2


def test_faster_rcnn_tiny_trains_and_evaluates(repo_root, tmp_path):
    out = _train(repo_root, tmp_path, '--cfg-options',
                 'train_cfg.max_iters=2', config=FRCNN)
    assert 'loss_rpn_cls' in out and 'loss_bbox' in out
    assert 'coco/bbox_mAP' in out  # evaluated after the last iteration
    ckpt = _load(tmp_path / 'iter_2.pth')  # the last iteration is saved
    assert any(k.startswith('roi_head.bbox_head.fc_cls')
               for k in ckpt['state_dict'])


# The failures below stop before or while the runner loads its checkpoint:
# run in this process to save interpreter start-ups.
def _run_tool_here(repo_root, monkeypatch, tool, *args):
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
    runpy.run_path(str(repo_root / 'tools' / tool), run_name='__main__')


def test_unknown_cfg_option_key_stops_with_its_name(repo_root, tmp_path,
                                                    monkeypatch):
    with pytest.raises(KeyError) as err:
        _run_tool_here(repo_root, monkeypatch, 'train.py', FCOS,
                       '--work-dir', tmp_path, '--cfg-options',
                       'model.bakbone.channels=[4,8]')
    msg = str(err.value)
    assert "'model.bakbone.channels'" in msg
    assert "no 'bakbone' under model" in msg
    assert not list(tmp_path.iterdir())  # nothing started


def test_missing_data_root_names_the_path(repo_root, trained, tmp_path,
                                          monkeypatch):
    missing = tmp_path / 'no_such_shared'
    monkeypatch.setenv('MMDET_ODAM_SHARED', str(missing))
    with pytest.raises(FileNotFoundError) as err:
        _run_tool_here(repo_root, monkeypatch, 'test.py', FCOS,
                       trained / 'iter_6.pth', '--work-dir', tmp_path / 'w')
    assert f"{missing}/data/coco_val2017_tiny80/" in str(err.value)
    assert 'test_dataloader.dataset' in str(err.value)


def test_test_tool_refuses_malicious_checkpoint(repo_root, trained,
                                                tmp_path, monkeypatch):
    from mmdet_odam.utils import UnsafeCheckpointError
    marker = tmp_path / 'pwned'

    class Payload:

        def __reduce__(self):
            return (os.system, (f'touch {marker}', ))

    ckpt = _load(trained / 'iter_6.pth')
    ckpt['meta']['payload'] = Payload()
    evil = tmp_path / 'evil.pth'
    torch.save(ckpt, evil)
    with pytest.raises(UnsafeCheckpointError) as err:
        _run_tool_here(repo_root, monkeypatch, 'test.py', FCOS, evil,
                       '--work-dir', tmp_path / 'w')
    assert f'refusing to load checkpoint {evil}' in str(err.value)
    assert 'posix.system' in str(err.value)
    assert not marker.exists()
