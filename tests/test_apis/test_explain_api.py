"""init_explainer / explain_image on the tiny FCOS config."""
import cv2
import numpy as np
import pytest
import torch

from mmdet_odam.apis import explain_image, init_explainer
from mmdet_odam.utils import repo_root

CFG = str(repo_root() / 'configs' / 'tiny' / 'fcos_tiny_coco-person.py')


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return init_explainer(CFG, device='cpu')


def image(h=90, w=130, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(img, (20, 15), (70, 80), (0, 0, 255), -1)
    return img


def test_explain_image_path_and_array(model, tmp_path):
    img = image()
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), img)
    a = explain_image(model, str(path), targets=('cls', 'combined'),
                      score_thr=0.0, topk=5)
    b = explain_image(model, img, targets=('cls', 'combined'),
                      score_thr=0.0, topk=5)
    assert a.img_path == str(path) and a.ori_shape == (90, 130)
    assert len(a) == 5 and a.maps['combined'].shape == (5, 90, 130)
    assert torch.allclose(a.maps['cls'], b.maps['cls'], atol=1e-5)
    assert torch.allclose(a.bboxes, b.bboxes)
    # boxes fit the original image
    assert (a.bboxes[:, 2] <= 130.01).all() and (a.bboxes[:, 3] <= 90.01).all()


def test_explain_given_box_and_empty(model):
    img = image()
    e = explain_image(model, img, targets='left', boxes=[[20, 15, 70, 80]],
                      labels=[0])
    assert len(e) == 1 and e.labels.tolist() == [0]
    assert e.maps['left'].shape == (1, 90, 130)
    none = explain_image(model, img, score_thr=1.0)
    assert len(none) == 0 and none.maps['cls'].shape == (0, 90, 130)


def test_explain_image_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        explain_image(model, str(tmp_path / 'missing.jpg'))
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image at all')
    with pytest.raises(ValueError, match='Cannot read image'):
        explain_image(model, str(bad))
    with pytest.raises(ValueError, match='HxWx3'):
        explain_image(model, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match='outside the image'):
        explain_image(model, image(), boxes=[[0, 0, 500, 40]])
    with pytest.raises(ValueError, match='valid names'):
        explain_image(model, image(), targets=['clss'])
    with pytest.raises(FileNotFoundError, match='Checkpoint'):
        init_explainer(CFG, checkpoint=str(tmp_path / 'none.pth'))
