"""Object-discrimination pairs and correlations, by hand."""
import pytest
import torch

from mmdet_odam.evaluation.discrimination import pair_values, pearson_matrix


def test_pearson_matrix_hand_values():
    flat = torch.tensor([[1., 2., 3.], [2., 4., 6.], [3., 2., 1.],
                         [5., 5., 5.]])
    c = pearson_matrix(flat)
    assert c[0, 1].item() == pytest.approx(1.0, abs=1e-6)  # scaled copy
    assert c[0, 2].item() == pytest.approx(-1.0, abs=1e-6)  # reversed
    assert c[0, 3].item() == 0.0  # constant map: no correlation
    assert torch.allclose(c, c.t())


def test_pair_values_same_and_overlapping_different_objects():
    # candidates 0, 1 on object 0; 2 on object 1 overlapping 0 (IoU .6);
    # 3 on object 2, far away (IoU 0)
    corr = torch.arange(16.).reshape(4, 4)
    obj = torch.tensor([0, 0, 1, 2])
    iou = torch.tensor([[1., .8, .6, 0.], [.8, 1., .4, 0.],
                        [.6, .4, 1., 0.], [0., 0., 0., 1.]])
    out = pair_values(corr, obj, iou)
    assert out['corr_same'].tolist() == [1.]  # pair (0, 1) once
    assert out['corr_diff'].tolist() == [2.]  # (0, 2); (1, 2) IoU .4
