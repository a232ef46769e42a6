"""Heat map on an image, with the explained box drawn (label and score).

Images are BGR ``uint8`` (H, W, 3) as ``mmcv.imread`` returns them; maps are
(H, W) in [0, 1] at the image resolution (:class:`Explanation` convention).
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

Color = Tuple[int, int, int]


def to_numpy_map(hmap) -> np.ndarray:
    """(H, W) tensor or array -> float32 array clipped to [0, 1]."""
    if isinstance(hmap, torch.Tensor):
        hmap = hmap.detach().float().cpu().numpy()
    hmap = np.asarray(hmap, dtype=np.float32)
    if hmap.ndim != 2:
        raise ValueError(f'a heat map must be (H, W), got {hmap.shape}')
    return np.clip(np.nan_to_num(hmap), 0.0, 1.0)


def colorize(hmap, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) BGR uint8 with ``colormap``."""
    m = (to_numpy_map(hmap) * 255.0 + 0.5).astype(np.uint8)
    return cv2.applyColorMap(m, colormap)


def blend_map(img: np.ndarray, hmap, alpha: float = 0.5,
              colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend a colour-mapped heat map onto an image.

    Args:
        img (np.ndarray): (H, W, 3) BGR uint8.
        hmap: (H, W) map in [0, 1]; resized to the image if its size differs.
        alpha (float): weight of the heat map in [0, 1].

    Returns:
        np.ndarray: (H, W, 3) BGR uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    img = _as_bgr(img)
    m = to_numpy_map(hmap)
    h, w = img.shape[:2]
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = colorize(m, colormap)
    return cv2.addWeighted(img, 1.0 - alpha, heat, alpha, 0.0)


def _as_bgr(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f'an image must be (H, W, 3) BGR, got {img.shape}')
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def draw_box(img: np.ndarray, box: Sequence[float], color: Color = (0, 255,
                                                                      0),
             text: Optional[str] = None, thickness: Optional[int] = None,
             font_scale: Optional[float] = None) -> np.ndarray:
    """Draw an xyxy box and an optional caption on a copy of ``img``.

    Line width and font size scale with the image size (like mmdet's
    ``DetLocalVisualizer``). ``color`` is BGR.
    """
    out = _as_bgr(img).copy()
    h, w = out.shape[:2]
    s = max(min(h, w) / 400.0, 0.35)
    thickness = thickness or max(1, int(round(2 * s)))
    font_scale = font_scale or 0.45 * s
    x1, y1, x2, y2 = [int(round(float(v))) for v in box]
    x1, x2 = np.clip([x1, x2], 0, w - 1)
    y1, y2 = np.clip([y1, y2], 0, h - 1)
    cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), color,
                  thickness, cv2.LINE_8)
    if text:
        font = cv2.FONT_HERSHEY_SIMPLEX
        ft = max(1, thickness // 2)
        (tw, th), base = cv2.getTextSize(text, font, font_scale, ft)
        ty = int(y1) - 2 if int(y1) - th - base - 2 >= 0 else \
            min(int(y1) + th + 2, h - base - 1)
        tx = int(min(max(int(x1), 0), max(w - tw - 2, 0)))
        cv2.rectangle(out, (tx, ty - th - 2), (tx + tw + 2, ty + base),
                      color, -1)
        lum = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        cv2.putText(out, text, (tx + 1, ty), font, font_scale,
                    (0, 0, 0) if lum > 128 else (255, 255, 255), ft,
                    cv2.LINE_AA)
    return out


def caption(label: int, score: Optional[float] = None,
            class_names: Optional[Sequence[str]] = None) -> str:
    """``'person 0.87'`` (class name if known, else ``'class 3'``)."""
    label = int(label)
    name = (class_names[label] if class_names is not None
            and 0 <= label < len(class_names) else f'class {label}')
    return name if score is None else f'{name} {float(score):.2f}'


def overlay_detection(img: np.ndarray, hmap, box: Sequence[float],
                      label: int, score: Optional[float] = None,
                      class_names: Optional[Sequence[str]] = None,
                      color: Color = (0, 255, 0), alpha: float = 0.5,
                      colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Heat map of one detection on the image, its box, label and score.

    Args:
        img (np.ndarray): (H, W, 3) BGR uint8 original image.
        hmap: (H, W) map in [0, 1].
        box: xyxy in image pixels.
        label (int): class index; ``class_names`` gives its name.
        score (float, optional): shown after the name.
        color: BGR box colour (e.g. the dataset palette's class colour).

    Returns:
        np.ndarray: (H, W, 3) BGR uint8, same size as ``img``.
    """
    out = blend_map(img, hmap, alpha=alpha, colormap=colormap)
    return draw_box(out, box, color, caption(label, score, class_names))


def class_colors(num_classes: int, palette=None) -> list:
    """BGR colours per class from an mmdet palette (RGB tuples, ``'coco'``,
    ``'random'``...; default ``'random'``, as mmdet's visualizer)."""
    from mmdet.visualization.palette import get_palette
    n = max(int(num_classes), 1)
    rgb = get_palette(palette if palette is not None else 'random', n)
    rgb = list(rgb) + [rgb[-1]] * (n - len(rgb))
    return [tuple(int(c) for c in reversed(col[:3])) for col in rgb[:n]]
