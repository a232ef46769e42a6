"""make_crowd.py / coco2crowdhuman.py / odgt reading: outputs that mmdet's
CrowdHuman dataset and metric read, determinism, disjoint splits, errors."""
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT.parent / 'shared').resolve()
TRAIN_ROOT = SHARED / 'data' / 'coco128_train2017'
VAL_ROOT = SHARED / 'data' / 'coco_val2017_tiny80'


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mc = _load('make_crowd', 'tools/dataset_converters/make_crowd.py')
c2c = _load('coco2crowdhuman', 'tools/dataset_converters/coco2crowdhuman.py')

KW = dict(persons_per_image=(4, 7), overlap_pairs=2.0, img_scale=(192, 144),
          jpg_quality=80, logger=lambda *a: None)


@pytest.fixture(scope='module')
def splits(tmp_path_factory):
    out = tmp_path_factory.mktemp('crowd')
    tr = mc.make_split(str(TRAIN_ROOT), str(out), 'train', 4, seed=0, **KW)
    va = mc.make_split(str(VAL_ROOT), str(out), 'val', 4, seed=1, **KW)
    return out, tr, va


def _digest(folder: Path):
    h = hashlib.sha256()
    for p in sorted(folder.rglob('*')):
        if p.is_file() and not p.name.startswith('sources_'):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_determinism(splits, tmp_path):
    out, _, _ = splits
    val = out / 'val'
    assert sorted(os.listdir(val)) == [
        'annotation_val.odgt', 'crowd_val.json', 'id_hw_val.json', 'images',
        'sources_val.json'
    ]
    assert len(os.listdir(val / 'images')) == 4
    assert not [p for p in os.listdir(out) if p.startswith('.')]
    mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 4, seed=1, **KW)
    assert _digest(tmp_path / 'val') == _digest(val)
    mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 4, seed=2, **KW)
    assert _digest(tmp_path / 'val') != _digest(val)


def test_train_val_share_no_source_person(splits):
    out, _, _ = splits
    src = {s: json.load(open(out / s / f'sources_{s}.json'))
           for s in ('train', 'val')}
    tr, va = (set(src[s]['source_ann_ids']) for s in ('train', 'val'))
    assert tr and va and not tr & va
    # every pasted person of a split comes from that split's COCO set
    for s, root in (('train', TRAIN_ROOT), ('val', VAL_ROOT)):
        coco = json.load(open(next((root / 'annotations').glob('*.json'))))
        person_ids = {a['id'] for a in coco['annotations']
                      if a['category_id'] == 1}
        assert set(src[s]['source_ann_ids']) <= person_ids
        odgt = [json.loads(x) for x in open(out / s / f'annotation_{s}.odgt')]
        used = {g['extra']['source_ann_id'] for r in odgt
                for g in r['gtboxes']}
        assert used == set(src[s]['source_ann_ids'])


def test_boxes_masks_and_overlap_pairs(splits):
    from pycocotools import mask as mask_utils
    out, tr, va = splits
    for s, st in (('train', tr), ('val', va)):
        odgt = [json.loads(x) for x in open(out / s / f'annotation_{s}.odgt')]
        coco = json.load(open(out / s / f'crowd_{s}.json'))
        anns = coco['annotations']
        assert len(anns) == sum(len(r['gtboxes']) for r in odgt)
        pairs = 0
        for r in odgt:
            valid = []
            for g in r['gtboxes']:
                fx, fy, fw, fh = g['fbox']
                vx, vy, vw, vh = g['vbox']
                # visible box lies inside the full box; both inside image
                assert fx <= vx and fy <= vy
                assert vx + vw <= fx + fw and vy + vh <= fy + fh
                assert 0 <= fx and fx + fw <= 192 and fy + fh <= 144
                if not g['extra']['ignore']:
                    valid.append([fx, fy, fx + fw, fy + fh])
            pairs += mc.count_overlap_pairs(valid)
        assert pairs > 0
        assert pairs / len(odgt) == pytest.approx(st['iou50_pairs_per_image'])
        # visible mask: its box is vbox, its area the annotation's area
        for a in anns:
            m = mask_utils.decode(a['segmentation'])
            assert m.sum() == a['area']
            if m.sum():
                ys, xs = np.nonzero(m)
                assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                        ys.max() + 1 - ys.min()] == a['vbox']
        # visible masks of one image never overlap (one owner per pixel)
        by_img = {}
        for a in anns:
            m = mask_utils.decode(a['segmentation']).astype(int)
            by_img[a['image_id']] = by_img.get(a['image_id'], 0) + m
        assert max(v.max() for v in by_img.values()) <= 1


def test_readable_by_mmdet_dataset_and_metric(splits):
    from mmdet.datasets import CrowdHumanDataset
    from mmdet.evaluation import CrowdHumanMetric
    from mmdet_odam.datasets import OdamCrowdHumanDataset
    out, _, _ = splits
    kw = dict(data_root=str(out), ann_file='val/annotation_val.odgt',
              data_prefix=dict(img='val/images/'), test_mode=True,
              pipeline=[])
    ds = CrowdHumanDataset(extra_ann_file=str(out / 'val/id_hw_val.json'),
                           **kw)
    ods = OdamCrowdHumanDataset(extra_ann_file='val/id_hw_val.json', **kw)
    ods2 = OdamCrowdHumanDataset(**kw)  # sizes read from the images
    assert len(ds) == len(ods) == len(ods2) == 4
    for i in range(4):
        a, b, c = ds[i], ods[i], ods2[i]
        assert (a['height'], a['width']) == (144, 192)
        assert (c['height'], c['width']) == (144, 192)
        assert a['instances'] == b['instances'] == c['instances']
    # ground truth as predictions: every GT matched, JI 1, MR 0; AP
    # integrates from the first detection (no (0, 1) anchor, CrowdDet's
    # rule): trapezoids between (k/n, 1), k = 1..n, give (n - 1) / n.
    import torch
    metric = CrowdHumanMetric(
        ann_file=str(out / 'val/annotation_val.odgt'),
        metric=['AP', 'MR', 'JI'])
    metric.dataset_meta = ds.metainfo
    for i in range(4):
        info = ds[i]
        boxes = torch.tensor([x['bbox'] for x in info['instances']
                              if not x['ignore_flag']], dtype=torch.float32)
        metric.process({}, [dict(
            img_id=info['img_id'], ori_shape=(144, 192),
            pred_instances=dict(bboxes=boxes,
                                scores=torch.linspace(1, .5, len(boxes))))])
    res = metric.evaluate(4)
    n = sum(not x['ignore_flag'] for d in ds for x in d['instances'])
    assert res['crowd_human/mAP'] == pytest.approx((n - 1) / n, abs=1e-4)
    assert res['crowd_human/mMR'] == pytest.approx(0.0, abs=1e-4)
    assert res['crowd_human/JI'] == pytest.approx(1.0, abs=1e-3)


def test_atomic_on_failure(splits, tmp_path, monkeypatch):
    mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 2, seed=1, **KW)
    before = _digest(tmp_path / 'val')
    calls = []

    def fail_second(path, img, params):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError('disk full')
        return True
    monkeypatch.setattr(mc.cv2, 'imwrite', fail_second)
    with pytest.raises(RuntimeError, match='disk full'):
        mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 3, seed=5, **KW)
    assert _digest(tmp_path / 'val') == before  # old split untouched
    assert os.listdir(tmp_path) == ['val']  # no temporary folder left


def test_bad_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        mc.make_split(str(tmp_path / 'nowhere'), str(tmp_path), 'val', 1)
    # an unreadable image holding a person: the error names the file
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True)
    (root / 'images').mkdir()
    (root / 'images' / 'broken.jpg').write_bytes(b'not a jpeg')
    coco = dict(
        images=[dict(id=1, file_name='broken.jpg', height=200, width=200)],
        annotations=[dict(id=1, image_id=1, category_id=1, iscrowd=0,
                          bbox=[10, 10, 80, 150], area=9000.,
                          segmentation=[[10, 10, 90, 10, 90, 160, 10, 160]])],
        categories=[dict(id=1, name='person')])
    (root / 'annotations' / 'instances_x.json').write_text(json.dumps(coco))
    with pytest.raises(OSError, match='broken.jpg'):
        mc.make_split(str(root), str(tmp_path / 'o'), 'val', 1)
    assert not (tmp_path / 'o' / 'val').exists()
    with pytest.raises(ValueError, match='persons_per_image'):
        mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 1,
                      persons_per_image=(5, 2))


def test_odgt_errors_name_file_and_line(tmp_path):
    from mmdet_odam.datasets import OdamCrowdHumanDataset, OdgtError
    from mmdet_odam.datasets.odgt import load_odgt
    good = json.dumps(dict(ID='a', gtboxes=[dict(
        tag='person', fbox=[1, 2, 3, 4], vbox=[1, 2, 3, 4],
        hbox=[1, 2, 0, 0])]))
    p = tmp_path / 'annotation_val.odgt'
    cases = {
        good + '\n{"ID": "b", "gtboxes": [\n': 'line 2: malformed JSON',
        good + '\n\n' + good + '\n': 'line 2: empty line',
        good + '\n{"gtboxes": []}\n': 'line 2: missing or empty string key',
        '{"ID": "a", "gtboxes": [{"tag": "person", "fbox": [1, 2]}]}':
        r'line 1: gtboxes\[0\]\["fbox"\]',
        '': 'the file is empty',
    }
    for text, msg in cases.items():
        p.write_text(text)
        with pytest.raises(OdgtError, match=msg) as e:
            load_odgt(str(p))
        assert str(p) in str(e.value)
    p.write_text(good + '\n')
    assert load_odgt(str(p))[0]['ID'] == 'a'
    with pytest.raises(FileNotFoundError, match='a.jpg'):
        OdamCrowdHumanDataset(data_root=str(tmp_path), ann_file=p.name,
                              data_prefix=dict(img=''), pipeline=[])
    with pytest.raises(FileNotFoundError, match='no_root'):
        OdamCrowdHumanDataset(data_root=str(tmp_path / 'no_root'),
                              ann_file=p.name, pipeline=[])


def test_coco2crowdhuman(tmp_path):
    from mmdet.datasets import CrowdHumanDataset
    ann = VAL_ROOT / 'annotations' / 'instances_val2017.json'
    out = tmp_path / 'annotation_tiny80.odgt'
    c2c.main([str(ann), str(out)])
    coco = json.load(open(ann))
    persons = [a for a in coco['annotations'] if a['category_id'] == 1]
    recs = [json.loads(x) for x in open(out)]
    assert len(recs) == len(coco['images'])
    tags = [g['tag'] for r in recs for g in r['gtboxes']]
    assert tags.count('mask') == sum(a['iscrowd'] for a in persons) > 0
    assert tags.count('person') == sum(not a['iscrowd'] for a in persons)
    ds = CrowdHumanDataset(
        data_root=str(VAL_ROOT), ann_file=str(out),
        extra_ann_file=str(tmp_path / 'id_hw_tiny80.json'),
        data_prefix=dict(img='images/'), test_mode=True, pipeline=[])
    n_ign = sum(i['ignore_flag'] for d in ds for i in d['instances'])
    assert n_ign == tags.count('mask')
    img0 = ds[0]
    assert os.path.isfile(img0['img_path'])
    info = {i['file_name']: i for i in coco['images']}
    name = os.path.basename(img0['img_path'])
    assert (img0['height'], img0['width']) == (info[name]['height'],
                                               info[name]['width'])
    c2c.main([str(ann), str(tmp_path / 'p.odgt'), '--skip-empty'])
    assert len(open(tmp_path / 'p.odgt').readlines()) == len(
        {a['image_id'] for a in persons})


def test_licence_filter(tmp_path):
    st = mc.make_split(str(VAL_ROOT), str(tmp_path), 'val', 2, seed=0,
                       licenses=[4, 5], **KW)
    src = json.load(open(tmp_path / 'val' / 'sources_val.json'))
    assert src['images'] and st['source_persons'] > 0
    assert {e['license'] for e in src['images']} <= {4, 5}
    used = {e['file_name'] for e in src['images']}
    assert set(src['background_images']) <= used
