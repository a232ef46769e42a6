"""``OdamHook``: explain every test image while ``tools/test.py`` runs.

Add it with the config fragment ``configs/odam/odam_hook_fragment.py``::

    custom_hooks = [dict(type='OdamHook', targets=['cls', 'combined'],
                         score_thr=0.3, topk=20, out_dir='odam')]

After each test iteration the batch is preprocessed again and explained by
the same explainer as ``tools/explain.py`` / ``mmdet_odam.apis``; the files
(``<stem>.npz``, ``<stem>/det<k>_<target>.jpg``, ``<stem>_grid.jpg``) go to
``<work_dir>/<timestamp>/<out_dir>/`` (an absolute ``out_dir`` is used as
is) and rank 0 writes ``index.html`` after the test.

No side effects on the test: the evaluator has already processed the
iteration's outputs when ``after_test_iter`` runs, the outputs are never
modified, the explainer restores the model (training flags,
``requires_grad``, torch hooks) and the hook restores the torch / numpy /
python random states, so metrics equal a run without the hook.

Distributed (``dist_test.sh``): each rank explains only its own batches;
the samples that mmengine's ``DefaultSampler`` repeats to pad the last
round are skipped, so every image is written exactly once.
"""
import copy
import logging
import os.path as osp
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.dist import barrier, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmdet.registry import HOOKS


@contextmanager
def preserved_rng_state():
    """Restore python, numpy and torch (CPU and CUDA) random states on
    exit, so randomised explainers (D-RISE) do not change later
    iterations."""
    py, npy, cpu = random.getstate(), np.random.get_state(), \
        torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() \
        else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def odam_maps_to_image(maps: torch.Tensor, meta: dict) -> torch.Tensor:
    """Odam-NMS maps of a result -> (K, H, W) maps in [0, 1] on the
    original image.

    ``results.odam_maps`` (K, h, w) are rendered on a grid covering the
    padded network input (``batch_input_shape``, or ``pad_shape`` /
    ``img_shape``); padding and resize are undone by sampling each original
    pixel at its centre, then every map is min-max normalised.
    """
    from mmdet_odam.core import level_to_image, minmax_normalize
    maps = maps.detach().float()
    k, h, w = maps.shape
    pad = meta.get('batch_input_shape') or meta.get('pad_shape') or \
        meta['img_shape']
    stride = (pad[0] / h, pad[1] / w)
    out = level_to_image(maps, stride, meta['img_shape'][:2],
                         meta['ori_shape'][:2], meta.get('scale_factor'))
    return minmax_normalize(out.clamp(min=0))


#: Explainer paths (``plan()[0]``) that compute what Odam-NMS stores in
#: ``odam_maps``: the batched patch path of dense heads (frozen norm
#: statistics) and the RoI adjoint of two-stage detectors.
NMS_MAP_PATHS = ('patch', 'roi_adjoint')


@HOOKS.register_module()
class OdamHook(Hook):
    """Save ODAM explanations of the test images.

    Args:
        targets (str | list[str]): explained targets (``cls``, ``left``,
            ``top``, ``right``, ``bottom``, ``combined``).
        score_thr (float): explain detections with score >= this.
        topk (int): at most this many detections per image.
        out_dir (str): output folder; relative to
            ``<work_dir>/<timestamp>/``.
        method (str): explainer (``odam``, ``gradcam``, ``gradcampp``,
            ``drise``).
        layer (str, optional): explained module (default: FPN level / RoI
            features).
        smoothing (str): ``gaussian`` or ``none``.
        grad_mode (str): ``pos_relu``, ``neg_relu``, ``pos_norelu``, ``abs``.
        path (str): gradient path, ``auto`` (default), ``exact`` or
            ``fast`` (see :class:`~mmdet_odam.explainers.targets.ExplainPath`).
        interval (int): explain every ``interval``-th test iteration.
        save_overlays (bool): write one overlay per detection and target.
        save_grid (bool): write the per-image grid.
        map_dtype (str): ``float16`` or ``float32`` maps in the npz.
        max_grid_rows (int): detections shown in a grid.
        reuse_odam_maps (bool): when the predictions carry ``odam_maps``
            (Odam-NMS) and they are exactly the maps asked for (target
            ``cls`` only, method ``odam``, default layer, ``gaussian``
            smoothing, ``pos_relu``, and ``path`` resolving to the path
            Odam-NMS takes on this model), write them instead of
            recomputing them; any other option computes the maps.
        strict (bool): raise on an explanation error instead of logging it
            and going on.
        explainer_cfg (dict, optional): more options of the explainer
            (e.g. ``chunk_size``).
    """
    priority = 'LOW'

    def __init__(self, targets=('cls', 'combined'), score_thr: float = 0.3,
                 topk: int = 100, out_dir: str = 'odam',
                 method: str = 'odam', layer: Optional[str] = None,
                 smoothing: str = 'gaussian', grad_mode: str = 'pos_relu',
                 path: str = 'auto', interval: int = 1, save_overlays: bool = True,
                 save_grid: bool = True, map_dtype: str = 'float16',
                 max_grid_rows: int = 20, reuse_odam_maps: bool = True,
                 strict: bool = False, explainer_cfg: Optional[dict] = None):
        from mmdet_odam.explainers.base import BaseExplainer
        from mmdet_odam.explainers.targets import (parse_grad_mode,
                                                   parse_path,
                                                   parse_smoothing,
                                                   parse_targets)
        self.targets = [t.value for t in parse_targets(targets)]
        smoothing = parse_smoothing(smoothing).value
        grad_mode = parse_grad_mode(grad_mode).value
        self.path = parse_path(path).value
        if topk is None:
            raise ValueError('topk must be >= 1, got None')
        BaseExplainer.check_thresholds(score_thr, topk)
        if int(interval) < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if map_dtype not in ('float16', 'float32'):
            raise ValueError(f'map_dtype must be float16 or float32, got '
                             f'{map_dtype!r}')
        self.score_thr = float(score_thr)
        self.topk = int(topk)
        self.out_dir = out_dir
        self.method = method
        self.layer = layer
        self.smoothing = smoothing
        self.grad_mode = grad_mode
        self.interval = int(interval)
        self.save_overlays = save_overlays
        self.save_grid = save_grid
        self.map_dtype = map_dtype
        self.max_grid_rows = max_grid_rows
        self.reuse_odam_maps = reuse_odam_maps
        self.strict = strict
        self.explainer_cfg = dict(explainer_cfg or {})
        self._explainer = None
        self._same_as_nms = False
        self._writer = None
        self._seen = 0
        self._dedup = None
        self.num_written = 0
        self.num_failed = 0
        self.num_reused = 0

    # -- set-up ----------------------------------------------------------
    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def resolve_out_dir(self, runner) -> Path:
        if osp.isabs(self.out_dir):
            return Path(self.out_dir)
        return Path(runner.work_dir) / runner.timestamp / self.out_dir

    def before_test(self, runner) -> None:
        from mmdet_odam.explainers import build_explainer
        from mmdet_odam.visualization import ExplanationWriter
        model = self._model(runner)
        path = dict(path=self.path) if self.method == 'odam' else {}
        self._explainer = build_explainer(
            model, self.method, targets=self.targets, layer=self.layer,
            smoothing=self.smoothing, grad_mode=self.grad_mode, **path,
            **self.explainer_cfg)
        self._same_as_nms = self._asks_for_nms_maps()
        meta = getattr(model, 'dataset_meta', None) or \
            getattr(runner.test_loop.dataloader.dataset, 'metainfo', {}) or {}
        self.out_path = self.resolve_out_dir(runner)
        self._writer = ExplanationWriter(
            self.out_path, class_names=meta.get('classes'),
            palette=meta.get('palette'), save_overlays=self.save_overlays,
            save_grid=self.save_grid, map_dtype=self.map_dtype,
            max_grid_rows=self.max_grid_rows)
        self._seen = 0
        self._dedup = self._padding_info(runner)
        self.num_written = self.num_failed = self.num_reused = 0

    @staticmethod
    def _padding_info(runner):
        """(rank, world size, dataset length) when the test sampler is a
        ``DefaultSampler`` that pads the last round, else ``None``."""
        from mmengine.dataset import DefaultSampler
        sampler = getattr(runner.test_loop.dataloader, 'sampler', None)
        if isinstance(sampler, DefaultSampler) and sampler.round_up and \
                sampler.world_size > 1:
            return (sampler.rank, sampler.world_size, len(sampler.dataset))
        return None

    def _is_padding(self) -> bool:
        """The sample about to be handled repeats one of another rank."""
        if self._dedup is None:
            return False
        rank, world, n = self._dedup
        return rank + self._seen * world >= n

    # -- per iteration ---------------------------------------------------
    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        if self._explainer is None:
            self.before_test(runner)
        n = len(outputs) if outputs is not None else len(
            data_batch['data_samples'])
        skip = []
        for _ in range(n):
            skip.append(self._is_padding())
            self._seen += 1
        if not self.every_n_inner_iters(batch_idx, self.interval) or \
                all(skip):
            return
        try:
            self._explain_batch(runner, data_batch, outputs or [None] * n,
                                skip)
        except Exception as e:
            self.num_failed += n
            if self.strict:
                raise
            paths = [ds.metainfo.get('img_path') for ds in
                     data_batch['data_samples']]
            print_log(f'OdamHook: could not explain batch {batch_idx} '
                      f'({paths}): {type(e).__name__}: {e}', logger='current',
                      level=logging.ERROR)

    def _explain_batch(self, runner, data_batch, outputs, skip):
        import mmcv
        from mmdet_odam.visualization import safe_stem
        model = self._model(runner)
        reuse = self._reusable(outputs)
        batch = dict(data_batch)
        batch['data_samples'] = copy.deepcopy(data_batch['data_samples'])
        with preserved_rng_state(), torch.enable_grad():
            data = model.data_preprocessor(batch, False)
            if reuse:
                expls = [
                    self._from_odam_maps(out, ds.metainfo)
                    for out, ds in zip(outputs, data['data_samples'])
                ]
                self.num_reused += len(expls)
            else:
                expls = self._explainer.explain(
                    data['inputs'], data['data_samples'],
                    score_thr=self.score_thr, topk=self.topk)
        for expl, ds, sk in zip(expls, data['data_samples'], skip):
            if sk:
                continue
            meta = ds.metainfo
            path = meta.get('img_path')
            stem = safe_stem(Path(path).stem) if path else \
                f'img_{meta.get("img_id", self._seen)}'
            img = mmcv.imread(path) if path and osp.isfile(path) else None
            if img is None:  # no original image: maps only
                h, w = [int(v) for v in meta['ori_shape'][:2]]
                img = np.zeros((h, w, 3), np.uint8)
            self._writer.write(stem, img, expl)
            self.num_written += 1

    def _asks_for_nms_maps(self) -> bool:
        """The options ask for exactly the maps Odam-NMS computes: ODAM
        ``cls`` at the FPN level, Gaussian smoothing, ``pos_relu``, through
        the path Odam-NMS takes (the patch path of a dense head, the RoI
        adjoint of a two-stage detector)."""
        if not (self.reuse_odam_maps and self.targets == ['cls']
                and self.method == 'odam'
                and self.layer in (None, 'fpn_level')
                and self.smoothing == 'gaussian'
                and self.grad_mode == 'pos_relu'):
            return False
        plan = getattr(self._explainer, 'plan', None)
        return plan is not None and plan()[0] in NMS_MAP_PATHS

    def _reusable(self, outputs) -> bool:
        """The options ask for Odam-NMS's maps and every prediction carries
        them."""
        return (self._same_as_nms and len(outputs) > 0 and all(
            o is not None and hasattr(o, 'pred_instances')
            and 'odam_maps' in o.pred_instances for o in outputs))

    def _from_odam_maps(self, out, meta):
        from mmdet_odam.core import top_scoring
        from mmdet_odam.explainers.results import Explanation
        pred = out.pred_instances
        keep = top_scoring(pred.scores, self.score_thr, self.topk)
        cand = pred.cand_inds[keep] if 'cand_inds' in pred else \
            torch.full((len(keep), ), -1, dtype=torch.long)
        maps = odam_maps_to_image(pred.odam_maps[keep], meta) if len(keep) \
            else torch.zeros(0, *[int(v) for v in meta['ori_shape'][:2]])
        return Explanation(
            bboxes=pred.bboxes[keep].detach().float().cpu(),
            scores=pred.scores[keep].detach().float().cpu(),
            labels=pred.labels[keep].detach().cpu(),
            candidate_inds=cand.detach().cpu(),
            maps={'cls': maps.cpu()},
            img_path=meta.get('img_path'),
            ori_shape=tuple(int(v) for v in meta['ori_shape'][:2]),
            method='odam', layer='fpn_level')

    # -- end -------------------------------------------------------------
    def after_test_epoch(self, runner, metrics=None) -> None:
        from mmengine.dist import all_reduce, get_world_size
        from mmdet_odam.visualization import write_gallery
        if self._writer is None:
            return
        counts = torch.tensor(
            [self.num_written, self.num_reused, self.num_failed],
            dtype=torch.float64)
        all_reduce(counts)  # sum over ranks (no-op when not distributed)
        written, reused, failed = (int(v) for v in counts.tolist())
        print_log(
            f'OdamHook: {written} explained image(s) written by '
            f'{get_world_size()} rank(s) to {self.out_path} ({reused} from '
            f'Odam-NMS maps, {failed} failed)', logger='current')
        barrier()
        if get_rank() == 0:
            self.out_path.mkdir(parents=True, exist_ok=True)
            write_gallery(self.out_path)
