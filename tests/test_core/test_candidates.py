"""The candidates container: validation, row selection, concatenation,
grouping by the forward a candidate depends on."""
import pytest
import torch

from mmdet_odam.core import Candidates, level_groups


def _cands(n=5, bboxes=True):
    ar = torch.arange(n)
    return Candidates(ar % 2, ar % 3, ar * 10, ar % 4,
                      torch.rand(n, 4) if bboxes else None)


def test_rows_and_fields_stay_together():
    c = _cands()
    assert len(c) == 5
    sub = c[torch.tensor([4, 1])]
    assert isinstance(sub, Candidates) and len(sub) == 2
    assert sub.loc_inds.tolist() == [40, 10]
    assert sub.labels.tolist() == [0, 1]
    assert torch.equal(sub.bboxes, c.bboxes[[4, 1]])
    assert c[c.level_ids == 0].loc_inds.tolist() == [0, 30]
    assert c[2].img_inds.tolist() == [0] and c[-1].loc_inds.tolist() == [40]
    assert c[1:3].level_ids.tolist() == [1, 2]
    both = Candidates.cat([c[:2], c[2:]])
    assert torch.equal(both.index_tensor(), c.index_tensor())
    assert torch.equal(both.bboxes, c.bboxes)
    # bboxes are kept only when every part has them
    assert Candidates.cat([c, _cands(bboxes=False)]).bboxes is None
    assert c.with_bboxes(None).bboxes is None
    one = Candidates.of_image(torch.tensor([1]), torch.tensor([7]),
                              torch.tensor([0]), img=3)
    assert one.img_inds.tolist() == [3]


def test_bad_candidates_are_refused():
    ar = torch.arange(3)
    with pytest.raises(ValueError, match='loc_inds has 2 rows'):
        Candidates(ar, ar, ar[:2], ar)
    with pytest.raises(TypeError, match='labels must hold integers'):
        Candidates(ar, ar, ar, ar.float())
    with pytest.raises(ValueError, match='must be \\(N,\\)'):
        Candidates(ar[None], ar[None], ar[None], ar[None])
    with pytest.raises(ValueError, match=r'bboxes must be \(3, 4\)'):
        Candidates(ar, ar, ar, ar, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r'in \[0, 2\), got \[0, 2\]'):
        Candidates(ar, ar, ar, ar).check_levels(2)
    Candidates(ar, ar, ar, ar).check_levels(3)
    Candidates.empty().check_levels(1)


def test_level_groups_by_hand():
    c = Candidates(torch.tensor([1, 0, 1, 0, 1]), torch.tensor([2, 2, 0, 0, 2]),
                   torch.zeros(5, dtype=torch.long),
                   torch.zeros(5, dtype=torch.long))
    got = [(i, lv, r.tolist()) for i, lv, r in c.level_groups()]
    assert got == [(0, 0, [3]), (1, 0, [2]), (0, 2, [1]), (1, 2, [0, 4])]
    assert Candidates.empty().level_groups() == []
    with pytest.raises(ValueError, match='must be'):
        level_groups(torch.zeros(3), torch.zeros(2))
