"""Instance specificity on a tiny FCOS trained by the test (paper Sec. 4):
the map of each object's detection peaks inside that object, not the other.
"""
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmdet_odam.explainers import DenseHeadExplainer
from odam_tiny_models import build_detector

BOXES = torch.tensor([[8., 14., 56., 82.], [74., 20., 122., 76.]])


def two_object_image(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (3, 96, 128)).astype(np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(BOXES.int().tolist()):
        yy, xx = np.mgrid[y1:y2, x1:x2]
        stripes = ((xx + yy) // 4) % 2 if k == 0 else ((xx - yy) // 4) % 2
        img[0, y1:y2, x1:x2] = 30 + 200 * stripes
        img[1, y1:y2, x1:x2] = 220 - 180 * stripes
        img[2, y1:y2, x1:x2] = 60
    return torch.from_numpy(img)


def batch(model, seeds):
    inputs, samples = [], []
    for s in seeds:
        inputs.append(two_object_image(s))
        ds = DetDataSample()
        ds.set_metainfo(dict(img_shape=(96, 128), ori_shape=(96, 128),
                             scale_factor=(1.0, 1.0)))
        gt = InstanceData()
        gt.bboxes = BOXES.clone()
        gt.labels = torch.zeros(2, dtype=torch.long)
        ds.gt_instances = gt
        samples.append(ds)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)
    return data['inputs'], data['data_samples']


def test_each_map_peaks_inside_its_own_object():
    model = build_detector('fcos', num_classes=1, std=0.01, seed=1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for it in range(40):
        inputs, samples = batch(model, [it, it + 1000])
        losses = model.loss(inputs, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    inputs, samples = batch(model, [7])
    exp = DenseHeadExplainer(model, targets=('cls', )).explain(
        inputs, samples, boxes=[BOXES])[0]
    maps = exp.maps['cls']
    yy, xx = torch.meshgrid(torch.arange(96) + 0.5, torch.arange(128) + 0.5,
                            indexing='ij')

    def inside(b):
        return (xx >= b[0]) & (xx <= b[2]) & (yy >= b[1]) & (yy <= b[3])

    for k in range(2):
        m = maps[k]
        own, other = inside(BOXES[k]), inside(BOXES[1 - k])
        py, px = divmod(int(m.argmax()), 128)
        assert own[py, px], (k, py, px)
        assert m[own].sum() > 3 * m[other].sum(), k
