"""Per-image grid of explanations: rows are detections, columns are targets
(like the paper's Fig. 15)."""
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .overlay import draw_box, overlay_detection


def cell_size(ori_shape: Sequence[int], cell_width: int) -> Tuple[int, int]:
    """(h, w) of one grid cell: the image scaled to ``cell_width``, aspect
    ratio kept."""
    h, w = int(ori_shape[0]), int(ori_shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f'empty image shape {tuple(ori_shape)}')
    return max(1, int(round(h * cell_width / w))), int(cell_width)


def make_grid(img: np.ndarray, bboxes, scores, labels,
              maps: Dict[str, object], targets: Optional[Sequence[str]] = None,
              class_names: Optional[Sequence[str]] = None,
              colors: Optional[Sequence] = None, cell_width: int = 256,
              max_rows: Optional[int] = None,
              alpha: float = 0.5) -> np.ndarray:
    """Grid of overlays of one image.

    Args:
        img (np.ndarray): (H, W, 3) BGR uint8 original image.
        bboxes: (K, 4) xyxy pixels; scores (K,); labels (K,).
        maps (dict): target -> (K, H, W) in [0, 1].
        targets (list[str], optional): column order (default: ``maps``
            order).
        colors (list, optional): BGR colour per class.
        cell_width (int): width of one cell; its height keeps the aspect.
        max_rows (int, optional): show at most this many detections (the
            first ones, i.e. the highest scores).

    Returns:
        np.ndarray: (rows * cell_h, cols * cell_w, 3) BGR uint8 with
        ``rows = min(K, max_rows)`` and ``cols = len(targets)``; an image
        without detections gives one cell with the image and
        "no detections".
    """
    targets = list(targets if targets is not None else maps.keys())
    ch, cw = cell_size(img.shape[:2], cell_width)
    k = len(bboxes)
    rows = k if max_rows is None else min(k, int(max_rows))
    if rows == 0 or not targets:
        cell = cv2.resize(img, (cw, ch), interpolation=cv2.INTER_AREA)
        return _label(cell, 'no detections')
    grid = np.zeros((rows * ch, len(targets) * cw, 3), dtype=np.uint8)
    for i in range(rows):
        label = int(labels[i])
        color = tuple(colors[label]) if colors is not None and \
            0 <= label < len(colors) else (0, 255, 0)
        for j, t in enumerate(targets):
            if t not in maps:
                raise KeyError(f'no maps for target {t!r}; have '
                               f'{sorted(maps)}')
            ov = overlay_detection(
                img, maps[t][i], [float(v) for v in bboxes[i]], label,
                float(scores[i]), class_names, color, alpha=alpha)
            ov = cv2.resize(ov, (cw, ch), interpolation=cv2.INTER_AREA)
            grid[i * ch:(i + 1) * ch, j * cw:(j + 1) * cw] = _label(
                ov, f'#{i} {t}')
    return grid


def _label(cell: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the bottom-left corner of a cell (white on black)."""
    out = cell.copy()
    h = out.shape[0]
    fs = max(0.35, min(out.shape[:2]) / 400.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    cv2.rectangle(out, (0, h - th - base - 4), (tw + 4, h), (0, 0, 0), -1)
    cv2.putText(out, text, (2, h - base - 2), cv2.FONT_HERSHEY_SIMPLEX, fs,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def frame_overlay(img: np.ndarray, bboxes, scores, labels, hmaps,
                  class_names: Optional[Sequence[str]] = None,
                  colors: Optional[Sequence] = None,
                  alpha: float = 0.5) -> np.ndarray:
    """All detections of one image in one picture (a video frame): the
    element-wise max of their maps, every box drawn.

    Args:
        hmaps: (K, H, W) maps in [0, 1] of one target.

    Returns:
        np.ndarray: (H, W, 3) BGR uint8.
    """
    from .overlay import blend_map, caption
    h, w = img.shape[:2]
    hm = np.asarray(hmaps.detach().float().cpu().numpy() if hasattr(
        hmaps, 'detach') else hmaps, dtype=np.float32)
    merged = hm.max(0) if hm.shape[0] else np.zeros((h, w), np.float32)
    out = blend_map(img, merged, alpha=alpha)
    for i in range(len(bboxes)):
        label = int(labels[i])
        color = tuple(colors[label]) if colors is not None and \
            0 <= label < len(colors) else (0, 255, 0)
        out = draw_box(out, [float(v) for v in bboxes[i]], color,
                       caption(label, float(scores[i]), class_names))
    return out
