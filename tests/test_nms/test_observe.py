"""observe_odam_nms: callers see batched_odam_nms's inputs inside the
block only, and its result is unchanged."""
import pytest
import torch

from mmdet_odam.nms import batched_odam_nms, observe_odam_nms

CFG = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.2, corr_high=0.8)


def _inputs():
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.zeros(3, dtype=torch.long)
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    return boxes, scores, labels, maps


def test_observer_sees_inputs_and_result_is_unchanged():
    args = _inputs()
    ref = batched_odam_nms(*args, CFG)
    seen = []
    with observe_odam_nms(lambda *a: seen.append(a)):
        got = batched_odam_nms(*args, CFG)
    assert len(seen) == 1
    for a, b in zip(seen[0], args):
        assert a is b
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    batched_odam_nms(*args, CFG)  # outside the block: not observed
    assert len(seen) == 1


def test_observer_removed_on_error():
    seen = []
    with pytest.raises(RuntimeError):
        with observe_odam_nms(lambda *a: seen.append(a)):
            raise RuntimeError('boom')
    batched_odam_nms(*_inputs(), CFG)
    assert seen == []
