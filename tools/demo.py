"""`make demo`: ODAM on real photographs with the bundled person detector.

Steps (each one fails loudly, naming itself):
  1. explain every person found in ``demo/images`` with all targets
     (``tools/explain.py``): per-image grids, overlays, npz, ``index.html``;
  2. evaluate classic NMS and Odam-NMS on the small generated crowd set
     ``demo/crowd_val_small`` (``tools/test.py``) and print AP / MR / JI and
     crowd / sparse recall;
  3. print where to look and what to try next.

Every figure printed is computed in this run. Outputs go to ``--out-dir``
(default ``outputs/demo``); a second run replaces them. Each step shows a
progress bar and one summary line; the full output of the tools (mmengine's
runner logs) goes to ``<out-dir>/logs/step<N>_<name>.log``, whose path is
printed.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/pretrained/fcos_mobilenetv2_crowd-person.py'
CHECKPOINT = 'checkpoints/fcos_mobilenetv2_crowd-person.pth'
ODAM_TRAIN_CHECKPOINT = \
    'checkpoints/fcos_mobilenetv2_crowd-person_ft-odam-train.pth'
_NMS = 'configs/demo/fcos_mobilenetv2_crowd-val-small_nms.py'
_ODAM_NMS = 'configs/demo/fcos_mobilenetv2_crowd-val-small_odam-nms.py'
NMS_RUNS = [  # (row name, config, checkpoint)
    ('NMS', _NMS, CHECKPOINT),
    ('Odam-NMS', _ODAM_NMS, CHECKPOINT),
    ('Odam-Train + Odam-NMS', _ODAM_NMS, ODAM_TRAIN_CHECKPOINT),
]
METRICS = [  # (column, key in the test log, scale)
    ('AP', 'crowd_human/mAP', 100), ('MR', 'crowd_human/mMR', 100),
    ('JI', 'crowd_human/JI', 100), ('recall', 'crowd_recall/recall', 100),
    ('crowd recall', 'crowd_recall/recall_crowd', 100),
    ('sparse recall', 'crowd_recall/recall_sparse', 100)
]


class DemoError(RuntimeError):
    """A demo step failed; the message names the step."""


_TEST_ITER = re.compile(r'\(test\)\s*\[\s*(\d+)/\s*(\d+)\]')


def count_files(pattern):
    """Progress of ``tools/explain.py``: its finished npz files."""
    return lambda: len(glob.glob(pattern))


def count_test_iters(log_path):
    """Progress of ``tools/test.py``: the last ``(test) [i/n]`` of its
    log (logged every iteration, see :func:`test_cmd`)."""
    def count():
        try:
            with open(log_path, errors='replace') as f:
                found = _TEST_ITER.findall(f.read())
        except OSError:
            return 0
        return int(found[-1][0]) if found else 0
    return count


def tail(path, n=15):
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


def run_step(step, title, cmd, log_path, total, count):
    """Run ``cmd`` with its output in ``log_path`` under a progress bar of
    ``count()`` out of ``total``; returns the seconds it took."""
    from mmengine.utils import ProgressBar
    print(f'{step} {title}', flush=True)
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        bar = ProgressBar(total, bar_width=30, file=sys.stdout)
        while True:
            running = proc.poll() is None
            new = min(count(), total) - bar.completed
            if new > 0:
                bar.update(new)
            if not running:
                break
            time.sleep(0.5)
    sys.stdout.write('\n')
    if proc.returncode != 0:
        raise DemoError(
            f'step {step} failed (exit code {proc.returncode}): '
            f'{" ".join(cmd)}\nlast lines of {osp.relpath(log_path, ROOT)}:'
            f'\n{tail(log_path)}')
    took = time.time() - start
    print(f'  done in {took:.0f} s (log: {osp.relpath(log_path, ROOT)})',
          flush=True)
    return took


def test_cmd(py, config, ckpt, work_dir):
    """``tools/test.py`` logging every iteration (for the progress bar)."""
    return [py, 'tools/test.py', config, ckpt, '--work-dir', work_dir,
            '--cfg-options', 'default_hooks.logger.interval=1']


def check_checkpoint(path):
    """Fail early, naming the file, when the checkpoint is missing or
    corrupt (loaded with ``weights_only=True`` like everything else)."""
    if not osp.isfile(osp.join(ROOT, path)):
        raise DemoError(
            f'step 0 (checkpoint): {path} is missing. It is committed with '
            'the repository; restore it with `git checkout -- '
            f'{path}` or rebuild it with tools/train_default_models.sh.')
    import torch

    import mmdet_odam  # noqa: F401  (allow-lists mmengine's numpy globals)
    try:
        ckpt = torch.load(osp.join(ROOT, path), map_location='cpu',
                          weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise DemoError(f'step 0 (checkpoint): {path} cannot be loaded '
                        f'({type(err).__name__}: {err}). Restore it with '
                        f'`git checkout -- {path}`.') from err
    if 'state_dict' not in ckpt:
        raise DemoError(f'step 0 (checkpoint): {path} has no state_dict')


def save_example_png(grid_path, out_dir, max_rows=4):
    """A PNG of the first ``max_rows`` detections (rows) of one grid."""
    import cv2
    import numpy as np
    grid = cv2.imread(grid_path)
    n_dets = len(np.load(grid_path.replace('_grid.jpg', '.npz'))['scores'])
    row_h = grid.shape[0] // max(1, min(n_dets, 20))  # --grid-max-rows 20
    crop = grid[:row_h * max_rows]
    crop = cv2.resize(crop, (crop.shape[1] // 2, crop.shape[0] // 2),
                      interpolation=cv2.INTER_AREA)
    path = osp.join(out_dir, 'grid_example.png')
    cv2.imwrite(path, crop)
    return path


def read_test_metrics(work_dir):
    """Metrics that mmengine's LoggerHook wrote for the test run."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    logs = [p for p in logs if 'vis_data' not in p]
    if not logs:
        raise DemoError(f'step 2: no test log json under {work_dir}')
    with open(logs[-1]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='outputs/demo')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--score-thr', type=float, default=0.3)
    args = parser.parse_args()
    out_dir = osp.join(ROOT, args.out_dir)
    py = sys.executable
    try:
        for ckpt in (CHECKPOINT, ODAM_TRAIN_CHECKPOINT):
            check_checkpoint(ckpt)
        if osp.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        explain_dir = osp.join(out_dir, 'explain')
        logs = osp.join(out_dir, 'logs')
        os.makedirs(logs)
        n_photos = len([f for f in os.listdir(osp.join(ROOT, 'demo/images'))
                        if f.lower().endswith(('.jpg', '.jpeg', '.png'))])
        n_val = len(glob.glob(
            osp.join(ROOT, 'demo/crowd_val_small/val/images/*')))
        steps = len(NMS_RUNS) + 1
        t_explain = run_step(
            f'[1/{steps}]', f'explain {n_photos} photographs (all targets)',
            [py, 'tools/explain.py', CONFIG, CHECKPOINT, 'demo/images',
             '--out-dir', explain_dir, '--targets', 'all', '--score-thr',
             str(args.score_thr), '--device', args.device],
            osp.join(logs, 'step1_explain.log'), n_photos,
            count_files(osp.join(explain_dir, '*.npz')))
        grids = sorted(glob.glob(osp.join(explain_dir, '*_grid.jpg')))
        if not grids:
            raise DemoError('step 1 wrote no grid image')
        example_png = save_example_png(grids[0], out_dir)
        rows = {}
        t_test = {}
        for i, (name, config, ckpt) in enumerate(NMS_RUNS, 2):
            slug = name.lower().replace(' + ', '_').replace('-', '_')
            work_dir = osp.join(out_dir, 'test_' + name.lower().replace(
                ' + ', '_'))
            log = osp.join(logs, f'step{i}_test_{slug}.log')
            t_test[name] = run_step(
                f'[{i}/{steps}]', f'{name} on demo/crowd_val_small '
                f'({n_val} images)', test_cmd(py, config, ckpt, work_dir),
                log, n_val, count_test_iters(log))
            rows[name] = read_test_metrics(work_dir)
    except DemoError as err:
        print(f'\nmake demo FAILED: {err}', file=sys.stderr)
        sys.exit(1)

    n_images = len(glob.glob(osp.join(explain_dir, '*.npz')))
    print('=' * 72)
    print(f'Explanations: {n_images} photographs, all targets, in '
          f'{t_explain:.0f} s')
    print(f'  grids:   {osp.relpath(grids[0], ROOT)} (+{len(grids) - 1} more)')
    gallery = osp.relpath(osp.join(explain_dir, 'index.html'), ROOT)
    print(f'  gallery: {gallery} (offline; click a detection)')
    print(f'  example: {osp.relpath(example_png, ROOT)}')
    print('\nNMS vs Odam-NMS: demo/crowd_val_small (generated crowd scenes, '
          'held-out persons), IoU 0.5')
    header = '| post-processing | ' + ' | '.join(m[0] for m in METRICS) + \
        ' | s/img |'
    print(header)
    print('|' + ' --- |' * (len(METRICS) + 2))
    for name, metrics in rows.items():
        cells = [f'{metrics[key] * scale:.1f}' for _, key, scale in METRICS]
        cells.append(f'{t_test[name] / max(n_val, 1):.2f}')
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    print('  (AP, JI, recalls: higher is better; MR = log-average miss rate, '
          'lower is better; s/img includes start-up)')
    print(f'  rows 1-2: {CHECKPOINT}; row 3: {ODAM_TRAIN_CHECKPOINT} '
          '(the same detector fine-tuned 80 steps with Odam-Train)')
    print('\nNext')
    print('  open the gallery above in a browser and click a detection, or '
          'look at a grid image')
    print('  explain your own images:  python tools/explain.py '
          f'{CONFIG} {CHECKPOINT} IMG_OR_DIR --out-dir outputs/mine '
          '--targets all')
    print('  train with Odam-Train:    python tools/train.py '
          'configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes.py')
    print('  real CrowdHuman:          python tools/test.py '
          'configs/odam_nms/fcos_mobilenetv2_crowdhuman_odam-nms.py CKPT')
    print('  measure explanations:     python '
          'tools/analysis_tools/eval_explanations.py CONFIG CKPT --methods '
          'odam gradcam gradcampp drise --out-dir outputs/eval')


if __name__ == '__main__':
    main()
