"""CudaGraphCache policy: eager on a key's first sighting, capture on the
second, failures stay eager, LRU of at most max_graphs."""
import torch

from mmdet_odam.utils.cuda_graphs import CapturedGraph, CudaGraphCache


class _FakeGraph:
    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


class _FakeCache(CudaGraphCache):
    """Captures without a GPU: runs the function once, like a capture."""

    def _capture(self, static, fn):
        return CapturedGraph(_FakeGraph(), static, fn())


def test_bucket():
    cache = CudaGraphCache(min_bucket=64)
    assert [cache.bucket(n) for n in (0, 1, 64, 65, 128, 1000, 1025)] == \
        [64, 64, 64, 128, 128, 1024, 2048]


def test_capture_on_second_sighting_and_lru():
    cache = _FakeCache(max_graphs=2)
    made = []

    def make(v):
        def _make():
            made.append(v)
            st = dict(x=torch.full((2, ), float(v)))
            return st, lambda: st['x'] * 2
        return _make

    assert cache.get('a', make(1)) is None  # first sighting: eager
    assert made == []
    a = cache.get('a', make(1))
    assert made == [1] and torch.equal(a.out, torch.tensor([2., 2.]))
    assert cache.get('a', make(1)) is a and made == [1]  # replayed, not made
    a.static['x'].fill_(5)
    assert a.replay() is a.out and a.graph.replays == 1
    for key in ('b', 'c'):
        cache.get(key, make(2))
        cache.get(key, make(2))
    assert len(cache) == 2  # 'a' was the least recently used
    assert cache.get('a', make(1)) is not a and made[-1] == 1
    cache.clear()
    assert len(cache) == 0 and cache.get('a', make(1)) is None


def test_failed_capture_stays_eager():
    """Without a GPU (or with an op that syncs) the capture fails: the key
    is remembered as eager and never captured again."""
    cache = CudaGraphCache()
    calls = []

    def make():
        calls.append(1)
        st = dict(x=torch.ones(3))
        return st, lambda: st['x'] + 1

    if torch.cuda.is_available():  # the failing op: a host sync
        def make():  # noqa: F811
            calls.append(1)
            st = dict(x=torch.ones(3, device='cuda'))
            return st, lambda: st['x'] + float(st['x'].sum())
    for _ in range(4):
        assert cache.get('k', make) is None
    assert len(calls) == 1 and len(cache) == 0


def test_thrashing_keys_stop_being_captured():
    """Many sizes cycling through a small cache: after max_captures no new
    graph is made (those keys run eagerly), cached ones still replay."""
    cache = _FakeCache(max_graphs=2, max_captures=3)

    def make():
        st = dict(x=torch.ones(1))
        return st, lambda: st['x']

    for _ in range(3):
        for key in 'abcd':
            cache.get(key, make)
    assert cache.captures == 3
    kept = [k for k in 'abcd' if cache.get(k, make) is not None]
    assert len(kept) == 2 and cache.captures == 3
