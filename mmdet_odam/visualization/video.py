"""Video input (frames) and the overlay video writer (``cv2.VideoWriter``,
written to a temporary file and renamed when closed)."""
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import cv2
import numpy as np

from ..utils.atomic import atomic_path

#: File extensions read as videos by ``tools/explain.py``.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                    '.mpeg')


def is_video(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def video_info(path: Union[str, Path]) -> Tuple[float, int, Tuple[int, int]]:
    """(fps, frame count, (H, W)) of a video; ``IOError`` if unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'video not found: {path}')
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise IOError(f'cannot open video: {path}')
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    finally:
        cap.release()
    return float(fps), n, (h, w)


def iter_video_frames(path: Union[str, Path],
                      stride: int = 1) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(frame index, BGR uint8 frame)`` for every ``stride``-th frame.

    Raises:
        FileNotFoundError / IOError: missing or unreadable video, or a video
        without a single decodable frame.
    """
    if int(stride) < 1:
        raise ValueError(f'video stride must be >= 1, got {stride}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'video not found: {path}')
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise IOError(f'cannot open video: {path}')
    idx, got = 0, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if idx % stride == 0:
                got += 1
                yield idx, frame
            idx += 1
    finally:
        cap.release()
    if got == 0:
        raise IOError(f'no decodable frame in video: {path}')


class VideoOverlayWriter:
    """Write BGR frames to a video atomically.

    The file appears at ``path`` only after :meth:`close` (or a clean exit
    of the ``with`` block); on an exception the partial file is removed.

    Args:
        path: output video (``.mp4`` by default codec ``mp4v``).
        fps (float): frames per second.
        fourcc (str): four-character codec code.
    """

    def __init__(self, path: Union[str, Path], fps: float = 10.0,
                 fourcc: str = 'mp4v'):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.fourcc = fourcc
        self._ctx = None
        self._tmp: Optional[str] = None
        self._writer = None
        self.size: Optional[Tuple[int, int]] = None
        self.num_frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append a (H, W, 3) BGR uint8 frame; all frames are resized to the
        size of the first one."""
        h, w = frame.shape[:2]
        if self._writer is None:
            self._ctx = atomic_path(self.path, suffix=self.path.suffix)
            self._tmp = self._ctx.__enter__()
            self.size = (h, w)
            self._writer = cv2.VideoWriter(
                self._tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                (w, h))
            if not self._writer.isOpened():
                self._abort()
                raise IOError(f'cannot open a {self.fourcc!r} video writer '
                              f'for {self.path}')
        if (h, w) != self.size:
            frame = cv2.resize(frame, (self.size[1], self.size[0]))
        self._writer.write(np.ascontiguousarray(frame, dtype=np.uint8))
        self.num_frames += 1

    def _abort(self):
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            try:
                ctx.__exit__(RuntimeError, RuntimeError('aborted'), None)
            except RuntimeError:
                pass

    def close(self) -> None:
        """Finish the video and move it to ``path`` (no file if no frame was
        written)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._abort()
        return False
