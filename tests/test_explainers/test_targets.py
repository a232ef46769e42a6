"""Target names and the options object of the batched candidate maps."""
import dataclasses

import pytest

from mmdet_odam.explainers.targets import (BOX_TARGETS, GradMode, MapOptions,
                                           Smoothing, Target, box_target,
                                           expand_targets, parse_targets,
                                           odam_train_map_options)
from mmdet_odam.losses import OdamTrainLoss


def test_map_options_parse_names():
    o = MapOptions('left', smoothing='none', grad_mode='abs')
    assert o.target is Target.LEFT and o.smoothing is Smoothing.NONE
    assert o.grad_mode is GradMode.ABS and o.create_graph is False
    d = MapOptions()
    assert (d.target, d.smoothing, d.grad_mode) == (
        Target.CLS, Smoothing.GAUSSIAN, GradMode.POS_RELU)
    assert MapOptions(smoothing=None).smoothing is Smoothing.NONE
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.target = Target.TOP


@pytest.mark.parametrize('bad, name', [(dict(target='width'), 'target'),
                                       (dict(smoothing='box'), 'smoothing'),
                                       (dict(grad_mode='sq'), 'grad_mode')])
def test_map_options_bad_name_lists_valid_ones(bad, name):
    with pytest.raises(ValueError, match=name):
        MapOptions(**bad)


def test_map_options_refuse_combined():
    with pytest.raises(ValueError, match='combined'):
        MapOptions('combined')


def test_odam_train_options_follow_the_loss():
    loss = OdamTrainLoss(smoothing='gaussian', grad_mode='abs')
    o = odam_train_map_options(loss)
    assert o == MapOptions('cls', 'gaussian', 'abs', create_graph=True)


def test_parse_and_expand_targets():
    assert parse_targets('cls, left,cls') == [Target.CLS, Target.LEFT]
    assert expand_targets([Target.COMBINED])[:1] == [Target.CLS]
    assert len(expand_targets([Target.COMBINED])) == 5
    with pytest.raises(ValueError, match='At least one target'):
        parse_targets('')


def test_box_target_signs():
    import torch
    boxes = torch.tensor([[1., 2., 5., 7.]])
    got = [float(box_target(boxes, t)) for t in BOX_TARGETS]
    assert got == [-1., -2., 5., 7.]
    with pytest.raises(ValueError, match='not a box target'):
        box_target(boxes, 'cls')
