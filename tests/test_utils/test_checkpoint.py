"""Checkpoints load with weights_only=True; anything else is refused."""
import io
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.runner import CheckpointLoader

from mmdet_odam.utils import (SAFE_GLOBALS, UnsafeCheckpointError,
                              load_from_local)


def _message_hub_state():
    hub = MessageHub.get_instance('test_checkpoint_hub')
    for i in range(3):
        hub.update_scalar('train/loss', 1.5 - i)
        hub.update_scalar('train/lr', np.float32(0.01))
    hub.update_info('iter', np.int64(3), resumed=True)
    return hub.state_dict()


def _save(tmp_path, obj, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_mmengine_checkpoint_round_trip(tmp_path):
    ckpt = dict(
        meta=dict(iter=3, scale=np.float64(0.5), arr=np.arange(4.)),
        state_dict={'w': torch.ones(2, 2)},
        message_hub=_message_hub_state())
    path = _save(tmp_path, ckpt)
    for loaded in (load_from_local(path),
                   CheckpointLoader.load_checkpoint(path),
                   torch.load(path, weights_only=True)):
        buf = loaded['message_hub']['log_scalars']['train/loss']
        np.testing.assert_array_equal(buf.data[0], [1.5, 0.5, -0.5])
        assert buf.mean() == pytest.approx(0.5)  # methods restored
        assert loaded['message_hub']['runtime_info']['iter'] == 3
        assert loaded['meta']['scale'] == 0.5
        np.testing.assert_array_equal(loaded['meta']['arr'], np.arange(4.))
        assert torch.equal(loaded['state_dict']['w'], torch.ones(2, 2))


class _Shell:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_code_execution_refused_and_not_run(tmp_path):
    marker = tmp_path / 'pwned'
    path = _save(tmp_path, {'state_dict': {}, 'x': _Shell(marker)})
    with pytest.raises(UnsafeCheckpointError) as err:
        CheckpointLoader.load_checkpoint(path)
    assert f'refusing to load checkpoint {path}' in str(err.value)
    assert 'posix.system' in str(err.value)
    assert not marker.exists()


class _GetAttrEscape:
    """``getattr`` is allowed only for HistoryBuffer's statistics."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize(
    'payload, expected',
    [(_GetAttrEscape(), "getattr(HistoryBuffer, '__init__')"),
     (np.array([1, 'a'], dtype=object), 'ObjectDType'),
     (io.BytesIO(b'x'), '_io.BytesIO')])
def test_objects_outside_allow_list_refused(tmp_path, payload, expected):
    path = _save(tmp_path, {'x': payload})
    with pytest.raises(UnsafeCheckpointError, match='refusing') as err:
        load_from_local(path)
    assert expected in str(err.value)


def test_numpy1_names_accepted():
    """Checkpoints pickled under numpy 1.x name ``numpy.core``."""
    from torch import _weights_only_unpickler
    raw = pickle.dumps({'a': np.arange(3.), 's': np.float64(2.)}, protocol=2)
    assert b'numpy._core.multiarray' in raw
    old = raw.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    loaded = _weights_only_unpickler.Unpickler(
        io.BytesIO(old), encoding='utf-8').load()
    np.testing.assert_array_equal(loaded['a'], np.arange(3.))
    assert loaded['s'] == 2.


def test_allow_list_has_no_general_callables():
    names = {g[1] if isinstance(g, tuple) else
             f'{g.__module__}.{g.__qualname__}' for g in SAFE_GLOBALS}
    assert not any(n.startswith(('os.', 'posix.', 'subprocess.', 'eval',
                                 'builtins.eval', 'builtins.exec'))
                   for n in names)
    # builtins.getattr is the restricted stand-in, not the builtin
    assert dict((g[1], g[0]) for g in SAFE_GLOBALS
                if isinstance(g, tuple))['builtins.getattr'] is not getattr


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such.pth'):
        load_from_local(str(tmp_path / 'no_such.pth'))
