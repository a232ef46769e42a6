"""Loading mmengine checkpoints under ``torch.load(weights_only=True)``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``. Checkpoints
written by mmengine 0.10.7's ``CheckpointHook`` hold, besides tensors, the
message hub (numpy arrays inside ``HistoryBuffer``) and numpy scalars. This
module allow-lists exactly those globals with
:func:`torch.serialization.add_safe_globals`; ``weights_only`` stays on, so a
checkpoint holding any other pickled object is refused with
:class:`UnsafeCheckpointError`.

:func:`register_checkpoint_loader` (run on ``import mmdet_odam``) replaces
mmengine's local-file loader by :func:`load_from_local`, so
``--resume``, ``load_from`` and ``Pretrained`` init all go through it.
"""
import os.path as osp
import pickle
import re
from typing import Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

SafeGlobal = Union[Callable, Tuple[Callable, str]]


#: HistoryBuffer methods pickled as ``getattr(HistoryBuffer, name)`` (its
#: ``_statistics_methods`` state).
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object that is not allow-listed."""


def history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` while unpickling: only
    ``getattr(HistoryBuffer, m)`` for ``m`` in :data:`HISTORY_BUFFER_METHODS`.

    A general ``getattr`` would let a pickle reach any attribute (and from
    there ``os.system``), so anything else is refused.
    """
    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'getattr({getattr(obj, "__qualname__", type(obj).__name__)}, '
        f'{name!r}) is not allowed in a checkpoint')


def _numpy_globals() -> List[SafeGlobal]:
    """numpy globals pickled by ``ndarray`` and ``np.generic`` (scalars).

    numpy 2 pickles them under ``numpy._core``; checkpoints written with
    numpy 1.x name them ``numpy.core``, accepted as aliases of the same
    objects.
    """
    multiarray = np._core.multiarray if hasattr(np, '_core') else \
        np.core.multiarray
    out: List[SafeGlobal] = [np.ndarray, np.dtype]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out.append((multiarray._reconstruct, f'{mod}._reconstruct'))
        out.append((multiarray.scalar, f'{mod}.scalar'))
    # A pickled dtype is rebuilt as an instance of its class (float64 ->
    # numpy.dtypes.Float64DType), which torch must allow: the plain numeric
    # dtypes only (no object, void or string dtypes).
    for name in ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8',
                 'uint16', 'uint32', 'uint64', 'float16', 'float32',
                 'float64'):
        out.append(type(np.dtype(name)))
    return out


#: Globals allowed in checkpoints, besides torch's own defaults: exactly
#: what mmengine 0.10.7's CheckpointHook writes (message hub + numpy).
SAFE_GLOBALS: List[SafeGlobal] = [
    HistoryBuffer, (history_buffer_getattr, 'builtins.getattr')
] + _numpy_globals()


def register_checkpoint_safe_globals() -> None:
    """Allow-list :data:`SAFE_GLOBALS` for ``weights_only`` loading.

    Idempotent: torch keeps the allow-list in a set.
    """
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def load_from_local(filename: str, map_location=None):
    """``torch.load(filename, weights_only=True)`` with a clear refusal.

    Args:
        filename (str): Path of a ``torch.save`` file.
        map_location: As :func:`torch.load`.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file holds objects outside the allow-list
            (torch defaults + :data:`SAFE_GLOBALS`), e.g. code to execute.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = sorted(
                torch.serialization.get_unsafe_globals_in_checkpoint(
                    filename))
        except Exception:  # not a zip checkpoint: fall back to torch's text
            unsafe = []
        if unsafe:
            what = ('it holds pickled objects that are not allow-listed: ' +
                    ', '.join(unsafe))
        else:  # e.g. a refused getattr: torch's message says which
            found = re.search(
                r'WeightsUnpickler error:\s*(.*?)\s*(?:Check the doc|$)',
                str(e), re.DOTALL)
            what = ' '.join((found.group(1) if found else str(e)).split())
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename}: {what}. Only tensors, '
            'plain containers, numpy arrays and mmengine message-hub state '
            'are loaded (weights_only=True, allow-list in '
            'mmdet_odam.utils.checkpoint.SAFE_GLOBALS). If you trust this '
            'file, re-save its state_dict as plain tensors.') from e


def register_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with
    :func:`load_from_local` (prefix ``''``, i.e. plain paths)."""
    register_checkpoint_safe_globals()
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
