# Copyright (c) mmdet-odam contributors.
"""Explain the detections of images, folders or videos with ODAM (or another
registered explainer) and write maps, overlays, grids and a gallery.

Usage::

    python tools/explain.py CONFIG CHECKPOINT INPUT [INPUT ...] --out-dir DIR
        [--targets cls combined] [--score-thr 0.3] [--topk 100]
        [--layer NAME] [--smoothing gaussian|none]
        [--grad-mode pos_relu|neg_relu|pos_norelu|abs]
        [--path auto|exact|fast] [--method odam|gradcam|gradcampp|drise]
        [--boxes BOXES.json | --boxes x1,y1,x2,y2[,label] ...]
        [--device cpu] [--cfg-options k=v ...] [--video-stride N]
        [--overwrite] [--quiet | --verbose]
    python tools/explain.py CONFIG CHECKPOINT --show-path [--targets ...]

List options take space or comma separated values (``--targets cls left``
or ``--targets cls,left``). ``--show-path`` prints which gradient path each
target takes on the model (exact or approximated) and exits.

INPUT is an image, a folder (searched recursively for image files) or a
video (every ``--video-stride``-th frame is explained).

Outputs (see ``mmdet_odam.visualization.writer``):

- ``DIR/<stem>.npz``: ``boxes`` (K,4) xyxy pixels float32, ``scores`` (K,),
  ``labels`` (K,), ``maps_<target>`` (K,H,W) float16 in [0,1];
- ``DIR/<stem>/det<k>_<target>.jpg``: one overlay per detection and target;
- ``DIR/<stem>_grid.jpg``: rows = detections, columns = targets;
- videos: ``DIR/<stem>_odam.mp4`` (all detections of a frame, first target)
  and per-frame npz in ``DIR/<stem>_frames/f<frame>.npz``;
- ``DIR/<stem>/{image,thumb}.jpg`` and ``DIR/<stem>/map<k>_<target>.jpg``
  (colour-mapped map alone) for the gallery;
- ``DIR/index.html``: a gallery of everything in ``DIR`` that works offline:
  click a detection to see its maps for every target over the image, with
  an opacity slider and target toggles.

Output: a progress bar and a summary at the end. With more than
``QUIET_ABOVE`` inputs (or ``--quiet``) failures are only counted there
and listed in ``DIR/failed.txt``; ``--verbose`` logs each one as it
happens.

Every file is written to a temporary name and renamed, and the npz (the
video for a video input) is written last: an input whose npz already exists
is skipped unless ``--overwrite``, so a killed run resumes where it stopped.
An input that fails (missing file, unreadable image, ...) is logged with its
path and reason and skipped. Exit code: 0 if at least one input succeeded
(or was already done), 1 if every input failed, 2 for a usage error (bad
option, unknown method or layer, no input found).
"""
import argparse
import json
import logging
import os.path as osp
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

# Run from a source checkout without installing: make the repo importable.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet_odam.visualization.video import VIDEO_EXTENSIONS  # noqa: E402

DEFAULT_TARGETS = ['cls', 'combined']
QUIET_ABOVE = 10
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp', '.ppm', '.pgm')
LOGGER_NAME = 'mmdet_odam.explain'


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Explain detections with ODAM: per detection and target '
        'heat maps (npz), overlays, grids, an index.html gallery and, for '
        'videos, an overlay video.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', help='detector config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        'inputs', nargs='*', metavar='INPUT',
        help='image files, folders (searched recursively for '
        f'{"/".join(e[1:] for e in IMAGE_EXTENSIONS)}) or videos '
        f'({"/".join(e[1:] for e in VIDEO_EXTENSIONS)})')
    parser.add_argument('--out-dir', help='output folder (required unless '
                        '--show-path)')
    parser.add_argument(
        '--targets', nargs='+', default=DEFAULT_TARGETS, metavar='TARGET',
        help='targets among cls, left, top, right, bottom, combined '
        '(combined computes all five scalar targets), space or comma '
        'separated; "all" = all six')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='explain detections with score >= this')
    parser.add_argument('--topk', type=int, default=100,
                        help='explain at most this many detections per image')
    parser.add_argument(
        '--layer', default=None,
        help='explained module (dotted name, e.g. backbone.layer3 or neck); '
        'default: the FPN level of each detection / the RoI features')
    parser.add_argument('--smoothing', default='gaussian',
                        help='gradient smoothing: gaussian or none')
    parser.add_argument('--grad-mode', default='pos_relu',
                        help='pos_relu, neg_relu, pos_norelu or abs')
    parser.add_argument(
        '--path', default=None, choices=['auto', 'exact', 'fast'],
        help='odam gradient path: "exact" = exact gradients everywhere, '
        '"fast" = the batched fast path wherever it applies (frozen '
        'GroupNorm statistics on GN heads), "auto" (default) = the fast '
        'path only where it is exact (see --show-path)')
    parser.add_argument(  # older spelling of --path, kept working
        '--exact', default=None, choices=['auto', 'yes', 'no'],
        help=argparse.SUPPRESS)
    parser.add_argument(
        '--show-path', action='store_true',
        help='print which gradient path each target takes on this model '
        '(and whether it is exact) and exit')
    parser.add_argument(
        '--method', default='odam',
        help='explainer: odam, or gradcam, gradcampp, drise (registered by '
        'mmdet_odam.explainers)')
    parser.add_argument(
        '--boxes', nargs='+', default=None, metavar='BOX',
        help='explain these boxes instead of the detections: a JSON file '
        '(a list of [x1,y1,x2,y2(,label)] for every input, or a dict from '
        'image file name or stem to such a list) or inline boxes '
        '"x1,y1,x2,y2[,label]" in original image pixels')
    parser.add_argument('--device', default=None,
                        help='cuda:0 if available, else cpu')
    parser.add_argument('--video-stride', type=int, default=1,
                        help='explain every N-th frame of a video')
    parser.add_argument('--overwrite', action='store_true',
                        help='recompute inputs whose results already exist')
    parser.add_argument('--no-overlays', action='store_true',
                        help='do not write one overlay per detection/target')
    parser.add_argument('--map-dtype', default='float16',
                        choices=['float16', 'float32'],
                        help='dtype of the maps in the npz')
    parser.add_argument('--grid-max-rows', type=int, default=20,
                        help='detections shown in the grid')
    parser.add_argument('--cell-width', type=int, default=256,
                        help='width of one grid cell in pixels')
    parser.add_argument(
        '--no-gallery', action='store_true',
        help='do not write the image, thumbnail and map files of the '
        'interactive gallery (index.html then shows the static overlays)')
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        '-q', '--quiet', action='store_true',
        help='progress bar and summary only, failures listed in '
        'DIR/failed.txt (the default above QUIET_ABOVE inputs)')
    verbosity.add_argument('-v', '--verbose', action='store_true',
                           help='log every failed input as it happens')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value (as tools/test.py)')
    args = parser.parse_args(argv)
    return parser, args


def check_args(parser, args):
    """Validate options before the model is built (usage errors exit 2)."""
    from mmdet_odam.explainers.targets import (Target, parse_grad_mode,
                                               parse_path, parse_smoothing,
                                               parse_targets)
    try:
        targets = split_list(args.targets)
        if [t.lower() for t in targets] == ['all']:
            targets = [t.value for t in Target if t != Target.MASK]
        args.target_list = [t.value for t in parse_targets(targets)]
        args.path = parse_path(args.path, args.exact).value
        if not args.show_path:
            if not args.inputs:
                raise ValueError('give at least one INPUT (or --show-path)')
            if not args.out_dir:
                raise ValueError('--out-dir is required')
        parse_smoothing(args.smoothing)
        parse_grad_mode(args.grad_mode)
        if not 0.0 <= args.score_thr <= 1.0:
            raise ValueError(f'--score-thr must be in [0, 1], got '
                             f'{args.score_thr}')
        if args.topk < 1:
            raise ValueError(f'--topk must be >= 1, got {args.topk}')
        if args.video_stride < 1:
            raise ValueError(f'--video-stride must be >= 1, got '
                             f'{args.video_stride}')
        if not osp.isfile(args.config):
            raise ValueError(f'config not found: {args.config}')
        if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
            raise ValueError(f'checkpoint not found: {args.checkpoint}')
        args.box_spec = parse_boxes(args.boxes)
    except ValueError as e:
        parser.error(str(e))


def split_list(values) -> List[str]:
    """``['cls', 'left']`` from ``cls left``, ``cls,left`` or a mix."""
    if isinstance(values, str):
        values = [values]
    return [v.strip() for s in values for v in s.split(',') if v.strip()]


# -- boxes --------------------------------------------------------------
def _box_rows(rows, where: str) -> Tuple[List[List[float]], Optional[List]]:
    boxes, labels = [], []
    for r in rows:
        if isinstance(r, str):
            r = [v for v in r.split(',') if v.strip()]
        try:
            vals = [float(v) for v in r]
        except (TypeError, ValueError):
            raise ValueError(f'bad box {r!r} in {where}: expected '
                             'x1,y1,x2,y2[,label] numbers')
        if len(vals) not in (4, 5):
            raise ValueError(f'bad box {r!r} in {where}: expected 4 '
                             'coordinates and an optional label')
        x1, y1, x2, y2 = vals[:4]
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f'bad box {r!r} in {where}: need x2 > x1 and '
                             'y2 > y1')
        boxes.append(vals[:4])
        labels.append(int(vals[4]) if len(vals) == 5 else None)
    if any(l is None for l in labels):
        if any(l is not None for l in labels):
            raise ValueError(f'give a label for every box in {where} or for '
                             'none')
        return boxes, None
    return boxes, labels


def parse_boxes(values: Optional[Sequence[str]]):
    """``None``, ``('all', rows)`` (same boxes for every input) or
    ``('map', {name: rows})``; rows = (boxes, labels or None)."""
    if not values:
        return None
    if len(values) == 1 and values[0].lower().endswith('.json'):
        path = values[0]
        if not osp.isfile(path):
            raise ValueError(f'--boxes file not found: {path}')
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'--boxes file {path} is not valid JSON: {e}')
        if isinstance(data, list):
            return ('all', _box_rows(data, path))
        if isinstance(data, dict):
            return ('map', {
                str(k): _box_rows(v, f'{path}[{k!r}]')
                for k, v in data.items()
            })
        raise ValueError(f'--boxes file {path} must hold a list of boxes or '
                         'a dict from image name to boxes')
    return ('all', _box_rows(values, '--boxes'))


def boxes_for(spec, path: str, stem: str):
    """(boxes (K,4) tensor, labels (K,) tensor or None) for one input."""
    import torch
    if spec is None:
        return None, None
    kind, data = spec
    if kind == 'all':
        rows = data
    else:
        p = Path(path)
        for key in (str(path), p.name, p.stem, stem):
            if key in data:
                rows = data[key]
                break
        else:
            return None, None  # not listed: explain its detections
    boxes, labels = rows
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    lab = None if labels is None else torch.tensor(labels, dtype=torch.long)
    return b, lab


# -- inputs -------------------------------------------------------------
def collect_inputs(inputs: Sequence[str]) -> List[Tuple[str, str, str]]:
    """Expand INPUT arguments into ``(kind, path, stem)`` tasks.

    ``kind`` is ``image`` or ``video``; files of a folder get the stem of
    their path relative to the folder (``sub/a.jpg`` -> ``sub_a``); clashing
    stems get ``_2``, ``_3``... suffixes. Paths that do not exist are kept
    (as images) so they are reported as failures.
    """
    from mmdet_odam.visualization import safe_stem
    tasks, seen = [], {}

    def add(kind, path, stem):
        stem = safe_stem(stem)
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        tasks.append((kind, str(path), stem if n == 1 else f'{stem}_{n}'))

    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob('*')
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith('.') for part in
                            f.relative_to(p).parts))
            for f in files:
                rel = f.relative_to(p).with_suffix('')
                add('image', f, '_'.join(rel.parts))
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            add('video', p, p.stem)
        else:
            add('image', p, p.stem)
    return tasks


# -- main ---------------------------------------------------------------
class Explainer:
    """The explanation options of one run, applied to images/frames."""

    def __init__(self, model, args):
        self.model = model
        self.args = args

    def __call__(self, img, path, boxes=None, labels=None):
        from mmdet_odam.apis import explain_image
        a = self.args
        expl = explain_image(
            self.model, img, targets=a.target_list, method=a.method,
            layer=a.layer, smoothing=a.smoothing, grad_mode=a.grad_mode,
            score_thr=a.score_thr, topk=a.topk, boxes=boxes, labels=labels,
            **exact_kwargs(a))
        if not getattr(expl, 'img_path', None):
            expl.img_path = str(path)
        return expl


def exact_kwargs(args):
    """``path=`` for the ODAM explainers (other methods have no such
    option)."""
    if args.method != 'odam':
        return {}
    return dict(path=args.path)


def show_path(model, args) -> None:
    """Print :func:`mmdet_odam.apis.explain_support` for the options."""
    from mmdet_odam.apis import explain_support
    print(str(explain_support(model, targets=args.target_list,
                              layer=args.layer, path=args.path,
                              method=args.method)))


def run_image(explainer, writer, path, stem, args):
    from mmdet_odam.apis import read_image
    img = read_image(path)
    boxes, labels = boxes_for(args.box_spec, path, stem)
    if boxes is not None:
        h, w = img.shape[:2]
        if len(boxes) and ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) |
                           (boxes[:, 2] > w) | (boxes[:, 3] > h)).any():
            raise ValueError(f'a box given for {path} lies outside the image '
                             f'(width {w}, height {h}): {boxes.tolist()}')
    expl = explainer(img, path, boxes, labels)
    writer.write(stem, img, expl)
    return len(expl.bboxes)


def run_video(explainer, writer_args, path, stem, args, out_dir):
    from mmdet_odam.visualization import (ExplanationWriter,
                                          VideoOverlayWriter, frame_overlay,
                                          iter_video_frames, video_info)
    fps, _, _ = video_info(path)
    frames_writer = ExplanationWriter(
        out_dir / f'{stem}_frames', save_overlays=False, save_grid=False,
        save_gallery=False, **writer_args)
    target = args.target_list[0]
    n_dets = 0
    out_fps = (fps / args.video_stride) if fps > 0 else 10.0
    with VideoOverlayWriter(out_dir / f'{stem}_odam.mp4', fps=out_fps) as vw:
        for idx, frame in iter_video_frames(path, args.video_stride):
            boxes, labels = boxes_for(args.box_spec, path, stem)
            expl = explainer(frame, f'{path}#{idx}', boxes, labels)
            frames_writer.write(f'f{idx:06d}', frame, expl)
            vw.write(
                frame_overlay(frame, expl.bboxes, expl.scores, expl.labels,
                              expl.maps[target], frames_writer.class_names,
                              frames_writer.colors))
            n_dets += len(expl.bboxes)
    return n_dets


def get_logger():
    from mmengine.logging import MMLogger
    if MMLogger.check_instance_created(LOGGER_NAME):
        return MMLogger.get_instance(LOGGER_NAME)
    return MMLogger.get_instance(LOGGER_NAME, log_level='INFO')


def build_model(parser, args):
    """The detector, checked against the explanation options (unknown
    method / layer: a usage error before any input is read)."""
    from mmdet_odam.apis import build_explainer, init_explainer
    if args.device is None:
        import torch
        args.device = 'cuda:0' if torch.cuda.is_available() else 'cpu'
    model = init_explainer(args.config, args.checkpoint, device=args.device,
                           cfg_options=args.cfg_options)
    try:
        build_explainer(model, args.method, targets=args.target_list,
                        layer=args.layer, smoothing=args.smoothing,
                        grad_mode=args.grad_mode, **exact_kwargs(args))
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    return model


def run_tasks(tasks, explainer, writer, writer_args, args, out_dir, quiet):
    """Explain every task under a progress bar; returns (done, skipped,
    failed [(path, reason)])."""
    from mmengine.logging import print_log
    from mmengine.utils import ProgressBar
    done, skipped, failed = 0, 0, []
    bar = ProgressBar(len(tasks), file=sys.stdout)
    for kind, path, stem in tasks:
        try:
            if kind == 'video':
                exists = (out_dir / f'{stem}_odam.mp4').is_file()
            else:
                exists = writer.is_done(stem)
            if exists and not args.overwrite:
                skipped += 1
            elif kind == 'video':
                run_video(explainer, writer_args, path, stem, args, out_dir)
                done += 1
            else:
                run_image(explainer, writer, path, stem, args)
                done += 1
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report, skip, go on with the next input
            failed.append((path, f'{type(e).__name__}: {e}'))
            if not quiet:
                sys.stdout.write('\n')  # end the progress bar line
                print_log(f'skipped {path}: {type(e).__name__}: {e}',
                          logger=get_logger(), level=logging.WARNING)
        bar.update()
    sys.stdout.write('\n')
    return done, skipped, failed


def report(done, skipped, failed, out_dir, quiet) -> None:
    """The summary; in quiet mode the failures go to ``failed.txt``."""
    from mmengine.logging import print_log
    logger = get_logger()
    print_log(
        f'{done} input(s) explained, {skipped} already done (skipped, use '
        f'--overwrite to redo), {len(failed)} failed; results in {out_dir} '
        f'(gallery: {out_dir / "index.html"})', logger=logger)
    log = out_dir / 'failed.txt'
    if quiet and failed:
        log.write_text(''.join(f'{p}\t{r}\n' for p, r in failed))
        print_log(f'failed inputs (path and reason): {log}', logger=logger,
                  level=logging.WARNING)
        return
    if log.is_file():
        log.unlink()  # from an earlier run
    for path, reason in failed:
        print_log(f'failed: {path}: {reason}', logger=logger,
                  level=logging.WARNING)


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    check_args(parser, args)

    import mmdet_odam  # noqa: F401  (registers components)
    from mmdet_odam.visualization import ExplanationWriter, write_gallery

    if args.show_path:
        show_path(build_model(parser, args), args)
        return 0
    tasks = collect_inputs(args.inputs)
    if not tasks:
        parser.error(f'no image or video found in {args.inputs}')
    quiet = args.quiet or (len(tasks) > QUIET_ABOVE and not args.verbose)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(parser, args)
    meta = getattr(model, 'dataset_meta', None) or {}
    writer_args = dict(
        class_names=meta.get('classes'), palette=meta.get('palette'),
        map_dtype=args.map_dtype, cell_width=args.cell_width,
        max_grid_rows=args.grid_max_rows)
    writer = ExplanationWriter(out_dir, save_overlays=not args.no_overlays,
                               save_gallery=not args.no_gallery,
                               **writer_args)
    done, skipped, failed = run_tasks(tasks, Explainer(model, args), writer,
                                      writer_args, args, out_dir, quiet)
    write_gallery(out_dir)
    report(done, skipped, failed, out_dir, quiet)
    return 1 if len(failed) == len(tasks) else 0


if __name__ == '__main__':
    sys.exit(main())
