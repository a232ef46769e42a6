"""Write the files of one explained image (shared by ``tools/explain.py``
and :class:`~mmdet_odam.engine.hooks.OdamHook`).

Layout under ``out_dir`` for an image with stem ``<stem>``:

- ``<stem>.npz``: ``boxes`` (K, 4) float32 xyxy original pixels, ``scores``
  (K,) float32, ``labels`` (K,) int64, ``candidate_inds`` (K,) int64,
  ``maps_<target>`` (K, H, W) float16 (or float32) in [0, 1], plus
  ``img_path``, ``ori_shape``, ``method``, ``layer``, ``targets``.
- ``<stem>/det<k>_<target>.jpg``: heat map of detection k for the target on
  the image, the box drawn with label and score.
- ``<stem>_grid.jpg``: rows = detections, columns = targets.
- gallery files (see :mod:`.gallery`): ``<stem>/image.jpg`` (the image),
  ``<stem>/thumb.jpg`` (small, every box drawn) and
  ``<stem>/map<k>_<target>.jpg`` (the colour-mapped map of detection k
  alone, blended over the image by the browser).

Every file is written atomically and the ``.npz`` is written last, so its
presence means the image is complete (used to resume).
"""
import os
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import cv2
import numpy as np

from ..utils.atomic import imwrite_atomic, savez_atomic
from .grid import make_grid
from .overlay import caption, class_colors, colorize, draw_box, \
    overlay_detection

MAP_DTYPES = ('float16', 'float32')
THUMB_WIDTH = 320
_SAFE = re.compile(r'[^A-Za-z0-9._-]+')


def safe_stem(name: str) -> str:
    """A file-name-safe stem (other characters become ``_``)."""
    s = _SAFE.sub('_', str(name)).strip('._')
    return s or 'image'


def explanation_arrays(expl, map_dtype: str = 'float16') -> Dict[str,
                                                                  np.ndarray]:
    """Arrays written to ``<stem>.npz`` for an :class:`Explanation`."""
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f'map_dtype must be one of {MAP_DTYPES}, got '
                         f'{map_dtype!r}')

    def np_(x, dtype):
        if hasattr(x, 'detach'):
            x = x.detach().cpu().numpy()
        return np.asarray(x).astype(dtype)

    k = len(expl.bboxes)
    cand = getattr(expl, 'candidate_inds', None)
    out = dict(
        boxes=np_(expl.bboxes, np.float32).reshape(k, 4),
        scores=np_(expl.scores, np.float32).reshape(k),
        labels=np_(expl.labels, np.int64).reshape(k),
        candidate_inds=(np_(cand, np.int64).reshape(k) if cand is not None
                        else np.full(k, -1, np.int64)))
    for t, m in expl.maps.items():
        out[f'maps_{t}'] = np.clip(np_(m, np.float32), 0, 1).astype(map_dtype)
    out['targets'] = np.array(list(expl.maps.keys()), dtype=str)
    out['img_path'] = np.array(str(getattr(expl, 'img_path', '') or ''))
    out['ori_shape'] = np.array(tuple(getattr(expl, 'ori_shape', ()))[:2],
                                dtype=np.int64)
    out['method'] = np.array(str(getattr(expl, 'method', '')))
    out['layer'] = np.array(str(getattr(expl, 'layer', '')))
    return out


class ExplanationWriter:
    """Writes the npz, overlays and grid of explained images.

    Args:
        out_dir (str): output folder.
        class_names (list[str], optional): names shown on boxes.
        palette: mmdet palette (list of RGB tuples or a name) for box colours.
        save_overlays (bool): write ``<stem>/det<k>_<target>.jpg``.
        save_grid (bool): write ``<stem>_grid.jpg``.
        map_dtype (str): ``float16`` (default) or ``float32`` in the npz.
        cell_width (int): width of a grid cell in pixels.
        max_grid_rows (int, optional): detections shown in the grid.
        alpha (float): heat map weight in the overlays.
        save_gallery (bool): write the files of the interactive gallery
            (``image.jpg``, ``thumb.jpg``, ``map<k>_<target>.jpg``).
    """

    def __init__(self, out_dir: Union[str, Path],
                 class_names: Optional[Sequence[str]] = None, palette=None,
                 save_overlays: bool = True, save_grid: bool = True,
                 map_dtype: str = 'float16', cell_width: int = 256,
                 max_grid_rows: Optional[int] = 20, alpha: float = 0.5,
                 save_gallery: bool = True):
        if map_dtype not in MAP_DTYPES:
            raise ValueError(f'map_dtype must be one of {MAP_DTYPES}, got '
                             f'{map_dtype!r}')
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names) if class_names else None
        n = len(self.class_names) if self.class_names else 80
        self.colors = class_colors(n, palette)
        self.save_overlays = save_overlays
        self.save_grid = save_grid
        self.map_dtype = map_dtype
        self.cell_width = int(cell_width)
        self.max_grid_rows = max_grid_rows
        self.alpha = float(alpha)
        self.save_gallery = save_gallery

    def npz_path(self, stem: str) -> Path:
        return self.out_dir / f'{stem}.npz'

    def grid_path(self, stem: str) -> Path:
        return self.out_dir / f'{stem}_grid.jpg'

    def overlay_dir(self, stem: str) -> Path:
        return self.out_dir / stem

    def is_done(self, stem: str) -> bool:
        """The image was completely written by an earlier run."""
        return self.npz_path(stem).is_file()

    def _color(self, label: int):
        return self.colors[label] if 0 <= label < len(self.colors) else \
            (0, 255, 0)

    def write(self, stem: str, img: np.ndarray, expl) -> Dict[str, object]:
        """Write all files of one image; returns their paths.

        Args:
            stem (str): output name (see :func:`safe_stem`).
            img (np.ndarray): (H, W, 3) BGR uint8 original image.
            expl (Explanation): its explanation (maps at the image size).
        """
        h, w = img.shape[:2]
        for t, m in expl.maps.items():
            if tuple(m.shape[-2:]) != (h, w) or m.shape[0] != len(
                    expl.bboxes):
                raise ValueError(
                    f'maps_{t} has shape {tuple(m.shape)}, expected '
                    f'({len(expl.bboxes)}, {h}, {w}) for {stem}')
        arrays = explanation_arrays(expl, self.map_dtype)
        arrays['label_names'] = np.array(
            [caption(l, None, self.class_names) for l in arrays['labels']],
            dtype=str).reshape(-1)
        targets = list(expl.maps.keys())
        k = len(arrays['boxes'])
        written = dict(overlays=[])
        odir = self.overlay_dir(stem)
        keep = set()
        if self.save_gallery:
            keep |= self._write_gallery_files(odir, img, arrays, targets)
        if self.save_overlays:
            for i in range(k):
                label = int(arrays['labels'][i])
                for t in targets:
                    name = f'det{i}_{t}.jpg'
                    ov = overlay_detection(
                        img, arrays[f'maps_{t}'][i].astype(np.float32),
                        arrays['boxes'][i], label,
                        float(arrays['scores'][i]), self.class_names,
                        self._color(label), alpha=self.alpha)
                    imwrite_atomic(odir / name, ov)
                    written['overlays'].append(str(odir / name))
                    keep.add(name)
        self._remove_stale(odir, keep)
        if self.save_grid:
            grid = make_grid(
                img, arrays['boxes'], arrays['scores'], arrays['labels'],
                {t: arrays[f'maps_{t}'] for t in targets}, targets,
                self.class_names, self.colors, self.cell_width,
                self.max_grid_rows, self.alpha)
            imwrite_atomic(self.grid_path(stem), grid)
            written['grid'] = str(self.grid_path(stem))
        savez_atomic(self.npz_path(stem), arrays)
        written['npz'] = str(self.npz_path(stem))
        return written

    def _write_gallery_files(self, odir: Path, img: np.ndarray, arrays,
                             targets) -> set:
        """``image.jpg``, ``thumb.jpg`` and one ``map<k>_<t>.jpg`` per
        detection and target; returns the names written."""
        imwrite_atomic(odir / 'image.jpg', img)
        imwrite_atomic(odir / 'thumb.jpg', self._thumbnail(img, arrays))
        names = {'image.jpg', 'thumb.jpg'}
        for t in targets:
            for i, m in enumerate(arrays[f'maps_{t}']):
                name = f'map{i}_{t}.jpg'
                imwrite_atomic(odir / name, colorize(m.astype(np.float32)))
                names.add(name)
        return names

    def _thumbnail(self, img: np.ndarray, arrays) -> np.ndarray:
        """(h, THUMB_WIDTH, 3) image (never enlarged), every box drawn."""
        h, w = img.shape[:2]
        s = min(1.0, THUMB_WIDTH / w)
        out = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA) if s < 1 else img
        for box, label in zip(arrays['boxes'], arrays['labels']):
            out = draw_box(out, [float(v) * s for v in box],
                           self._color(int(label)), thickness=2)
        return out

    @staticmethod
    def _remove_stale(odir: Path, keep: set) -> None:
        """Drop overlays and gallery maps of an earlier run that the new
        result lacks."""
        if not odir.is_dir():
            return
        for pattern in ('det*_*.jpg', 'map*_*.jpg', 'image.jpg',
                        'thumb.jpg'):
            for p in odir.glob(pattern):
                if p.name not in keep:
                    os.remove(p)
