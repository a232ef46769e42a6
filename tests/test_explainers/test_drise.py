"""D-RISE map normalisation: the per-pixel mask coverage is divided out
(``normalize='coverage'``), the paper's raw weighted sum stays available
(``normalize='raw'``)."""
import pytest
import torch
from odam_tiny_models import build_detector, fake_batch

from mmdet_odam.explainers import build_explainer
from mmdet_odam.explainers.drise import (DRISENormalize, drise_saliency,
                                         finish_saliency, generate_masks)

BOX, LABEL = torch.tensor([[0., 0., 8., 8.]]), torch.tensor([0])


def scorer(score_of):
    """'Detector' with the target box, scored ``score_of(masks (B, H, W))``
    -> (B,)."""

    def detect(masks):
        s = score_of(masks[:, 0])
        return [(BOX.clone(), s[i:i + 1], LABEL.clone())
                for i in range(len(masks))]

    return detect


def masks_of(n, size, cells, chunk, seed):
    """The masks ``drise_saliency`` draws (same generator, same chunks)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([generate_masks(min(chunk, n - i), size, cells, 0.5, gen)
                      for i in range(0, n, chunk)])[:, 0]


def pearson(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_constant_score_gives_a_flat_map():
    """A score that ignores the image carries no evidence: the map is flat.
    The raw sum is 0.7 x the mask coverage (structure from the masks only).
    """
    kw = dict(n_masks=200, cells=8, chunk_size=100, seed=0)
    detect = scorer(lambda m: torch.full((len(m), ), 0.7))
    sal = drise_saliency(detect, (32, 32), BOX, LABEL, **kw)[0]
    assert sal.shape == (32, 32) and sal.dtype == torch.float32
    assert float(sal.max() - sal.min()) == 0.0  # exactly, not up to noise
    torch.testing.assert_close(sal, torch.full_like(sal, 0.7))
    raw = drise_saliency(detect, (32, 32), BOX, LABEL, normalize='raw',
                         **kw)[0]
    coverage = masks_of(200, (32, 32), 8, 100, 0).sum(0)
    torch.testing.assert_close(raw, 0.7 * coverage)
    assert (raw.max() - raw.min()) / raw.max() > 0.2


def test_one_region_scorer_peaks_there_at_200_masks():
    """A confident detector whose score drops a little when one region is
    masked: the map peaks in that region, and away from it does not follow
    the mask coverage. The raw sum at 200 masks is mostly coverage."""
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[20:28, 4:12] = True
    detect = scorer(lambda m: 0.8 + 0.1 * m[:, region].mean(1))
    kw = dict(n_masks=200, cells=8, chunk_size=100, seed=0)
    sal = drise_saliency(detect, (32, 32), BOX, LABEL, **kw)[0]
    raw = drise_saliency(detect, (32, 32), BOX, LABEL, normalize='raw',
                         **kw)[0]
    r, c = divmod(int(sal.argmax()), 32)
    assert region[r, c]
    top = sal.flatten().topk(64).indices
    assert region.flatten()[top].float().mean() > 0.6
    coverage = masks_of(200, (32, 32), 8, 100, 0).sum(0)
    far = torch.ones(32, 32, dtype=torch.bool)
    far[14:, :18] = False  # more than one cell away from the region
    assert abs(pearson(sal[far], coverage[far])) < 0.3
    assert pearson(raw[far], coverage[far]) > 0.9


def test_coverage_normalisation_by_hand():
    """sum_i w_i M_i / sum_i M_i per pixel, against masks drawn here and
    known weights (the kept fraction of the left half)."""
    kw = dict(n_masks=60, cells=4, chunk_size=25, seed=5)
    masks = masks_of(60, (12, 16), 4, 25, 5)
    detect = scorer(lambda m: m[:, :, :8].mean((1, 2)))
    w = masks[:, :, :8].mean((1, 2))
    sal = drise_saliency(detect, (12, 16), BOX, LABEL, **kw)[0]
    torch.testing.assert_close(
        sal, (w[:, None, None] * masks).sum(0) / masks.sum(0))
    # finish_saliency: a pixel no mask kept gets the mean weight
    wsum = torch.tensor([[[0.6, 0.0]]])
    cov = torch.tensor([[2.0, 0.0]])
    out = finish_saliency(wsum, cov, torch.tensor([1.5]), 3, 'coverage')
    torch.testing.assert_close(out, torch.tensor([[[0.3, 0.5]]]))
    torch.testing.assert_close(
        finish_saliency(wsum, cov, torch.tensor([1.5]), 3,
                        DRISENormalize.RAW), wsum)


def test_unknown_normalize_is_refused_with_the_valid_names():
    detect = scorer(lambda m: torch.ones(len(m)))
    with pytest.raises(ValueError, match='valid names: coverage, raw'):
        drise_saliency(detect, (8, 8), BOX, LABEL, n_masks=4,
                       normalize='mean')
    with pytest.raises(ValueError, match="normalize 'cov'"):
        build_explainer(build_detector(), 'drise', normalize='cov')


def test_checkpoint_of_the_older_format_is_not_resumed(tmp_path):
    """A checkpoint without the coverage sum (older version) is ignored:
    the run starts over and gives the uninterrupted result."""
    calls = []

    def detect(masks):
        calls.append(len(masks))
        return scorer(lambda m: m[:, :4].mean((1, 2)))(masks)

    kw = dict(n_masks=40, cells=4, chunk_size=20, seed=1)
    full = drise_saliency(detect, (16, 16), BOX, LABEL, **kw)
    key = dict(n_masks=40, cells=4, p=0.5, seed=1, size=(16, 16),
               boxes=BOX.tolist(), labels=LABEL.tolist())
    ckpt = tmp_path / 'old.pth'
    torch.save(dict(key=key, sal=torch.zeros(1, 16, 16), done=20,
                    rng=torch.Generator().get_state()), ckpt)
    calls.clear()
    again = drise_saliency(detect, (16, 16), BOX, LABEL, checkpoint=str(ckpt),
                           **kw)
    assert calls == [20, 20]
    torch.testing.assert_close(again, full)
    assert not ckpt.exists()


def test_explainer_on_a_detector_that_ignores_the_image():
    """A real detector whose head sees only its biases returns the same
    detections for every masked image: the D-RISE map is flat (all zeros
    after min-max), while the raw sum shows the mask coverage."""
    model = build_detector('fcos', num_classes=1)
    with torch.no_grad():
        for name, prm in model.bbox_head.named_parameters():
            if name.endswith('weight') and prm.dim() == 4:
                prm.zero_()
        model.bbox_head.conv_reg.bias.fill_(1.0)  # boxes of 2 strides
    inputs, samples = fake_batch(model)
    kw = dict(n_masks=16, cells=4, chunk_size=8)
    maps = {}
    for mode in ('coverage', 'raw'):
        ex = build_explainer(model, 'drise', normalize=mode, **kw)
        assert ex.normalize == DRISENormalize(mode)
        res = ex.explain(inputs, samples, score_thr=0.0, topk=2)[0]
        assert len(res) == 2 and res.maps['cls'].shape == (2, 70, 100)
        maps[mode] = res.maps['cls']
    assert float(maps['coverage'].abs().max()) == 0.0
    for k in range(2):
        assert float(maps['raw'][k].max() - maps['raw'][k].min()) == \
            pytest.approx(1.0)
