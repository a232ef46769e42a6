"""Run mmdet detectors in float64 on the CPU (for oracle comparisons)."""
from contextlib import contextmanager


class _Float32NMS:
    """mmcv's compiled ops, with ``nms`` on a float32 copy of its inputs."""

    def __init__(self, ext):
        self._ext = ext

    def __getattr__(self, name):
        return getattr(self._ext, name)

    def nms(self, boxes, scores, *args, **kwargs):
        return self._ext.nms(boxes.float(), scores.float(), *args, **kwargs)


@contextmanager
def float64_nms():
    """mmcv's CPU NMS kernel takes float32 only: inside this block, NMS of
    float64 boxes runs on a float32 copy (it returns indices; no gradient
    flows through NMS). Everything else keeps float64."""
    import importlib
    nms_mod = importlib.import_module('mmcv.ops.nms')
    ext = nms_mod.ext_module
    nms_mod.ext_module = _Float32NMS(ext)
    try:
        yield
    finally:
        nms_mod.ext_module = ext
