"""Atomic file writes: write to a temporary file in the same folder, then
rename, so a killed run never leaves a half-written output."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Union

import cv2
import numpy as np

PathLike = Union[str, Path]


@contextmanager
def atomic_path(path: PathLike, suffix: str = '') -> Iterator[str]:
    """Yield a temporary path beside ``path``; renamed onto ``path`` when the
    block exits without error, deleted otherwise.

    ``suffix`` is kept at the end of the temporary name (encoders such as
    ``cv2.VideoWriter`` choose the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp' +
                               suffix, dir=str(path.parent))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode('utf-8'))


def imwrite_atomic(path: PathLike, img: np.ndarray,
                   jpeg_quality: int = 90) -> None:
    """Encode ``img`` (BGR uint8) by the extension of ``path`` and write it
    atomically."""
    ext = Path(path).suffix.lower() or '.png'
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] \
        if ext in ('.jpg', '.jpeg') else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise IOError(f'could not encode an image as {ext} for {path}')
    write_bytes_atomic(path, buf.tobytes())


def savez_atomic(path: PathLike, arrays: Dict[str, np.ndarray],
                 compressed: bool = True) -> None:
    """``np.savez[_compressed]`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
