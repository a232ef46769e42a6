"""A small cache of captured CUDA graphs for launch-bound tensor code.

Odam-NMS's candidate maps and duplicate matrix are ~100 small kernels each;
on a GPU their launch cost, not their arithmetic, dominates. Both are pure
tensor functions with no host sync, so they are captured once per key
(input size, candidate bucket, constants) and replayed afterwards:

1. a key seen for the first time returns None (the caller runs eagerly:
   sizes that never recur cost no capture);
2. the second time, ``make()`` gives the static input tensors and the
   function reading them; it is run once on a side stream (warm-up: cuDNN
   plans, cached constants) and captured; a failing capture is remembered
   and the key stays eager;
3. afterwards the caller copies its inputs into the static tensors, calls
   :meth:`CapturedGraph.replay` and copies the outputs it needs.

Graphs share one memory pool (they are replayed one at a time and every
replay refills its inputs); at most ``max_graphs`` are kept, least recently
used dropped. When keys keep being dropped and captured again (more than
``max_captures`` captures, e.g. a test set with many image sizes), no new
graph is captured: such keys run eagerly rather than thrash.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch


@dataclass
class CapturedGraph:
    """A replayable graph, its static inputs and its outputs."""
    graph: Any
    static: Dict[str, torch.Tensor]
    out: Any

    def replay(self):
        """Run the captured kernels on the current static inputs."""
        self.graph.replay()
        return self.out


class CudaGraphCache:
    """Captured CUDA graphs per hashable key (see the module doc).

    Args:
        max_graphs (int): graphs kept (LRU).
        min_bucket (int): smallest padded batch of :meth:`bucket`.
        max_captures (int, optional): captures after which no new key is
            captured (default ``4 * max_graphs``).
    """

    def __init__(self, max_graphs: int = 8, min_bucket: int = 64,
                 max_captures: Optional[int] = None):
        self.max_graphs = int(max_graphs)
        self.min_bucket = int(min_bucket)
        self.max_captures = int(max_captures if max_captures is not None
                                else 4 * self.max_graphs)
        self.captures = 0
        self._graphs: 'OrderedDict[Hashable, Any]' = OrderedDict()
        self._seen: Dict[Hashable, int] = {}
        self._pool = None

    def __len__(self) -> int:
        return sum(1 for g in self._graphs.values() if g is not False)

    def clear(self) -> None:
        """Drop every graph (and the shared pool)."""
        self._graphs.clear()
        self._seen.clear()
        self._pool = None
        self.captures = 0

    def bucket(self, n: int) -> int:
        """Padded batch size for ``n`` rows: the next power of two, at
        least ``min_bucket`` (few distinct graphs for varying counts)."""
        return max(self.min_bucket, 1 << max(int(n) - 1, 0).bit_length())

    def get(self, key: Hashable,
            make: Callable[[], Tuple[Dict[str, torch.Tensor], Callable]]
            ) -> Optional[CapturedGraph]:
        """The graph of ``key``, captured from ``make()`` on its second
        sighting; None while it should run eagerly."""
        entry = self._graphs.get(key)
        if entry is None:
            self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen[key] < 2 or self.captures >= self.max_captures:
                return None
            self.captures += 1
            entry = self._capture(*make())
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        if entry is False:
            return None
        self._graphs.move_to_end(key)
        return entry

    def _capture(self, static: Dict[str, torch.Tensor],
                 fn: Callable) -> Any:
        """Warm up and capture ``fn()`` (reading ``static``); False when
        the capture fails (no GPU, an op that syncs, ...)."""
        try:
            dev = next(t.device for t in static.values()
                       if isinstance(t, torch.Tensor))
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = fn()
            self._pool = graph.pool()
            return CapturedGraph(graph, static, out)
        except Exception:  # noqa: BLE001 - any capture problem: stay eager
            return False
