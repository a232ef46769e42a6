# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Convert COCO person annotations to CrowdHuman ``.odgt``.

Each COCO image becomes one line ``{"ID": <file stem>, "gtboxes": [...]}``:
a person becomes ``tag='person'`` with ``fbox`` = ``vbox`` = the COCO
``bbox`` (COCO boxes are visible-extent boxes, so the full box is not known);
an ``iscrowd`` person region becomes an ignore box (``tag='mask'``,
``extra.ignore=1``), as CrowdHuman marks crowd regions. ``hbox`` is not
annotated in COCO: a zero-size box with ``head_attr.ignore=1``. Images
without persons are kept (``--skip-empty`` drops them). ``id_hw_SPLIT.json``
(``{ID: [h, w]}``) is written beside the ``.odgt`` for ``CrowdHumanDataset``'s
``extra_ann_file``. Both files are written atomically.

Example::

    python tools/dataset_converters/coco2crowdhuman.py \
        ../shared/data/coco_val2017_tiny80/annotations/instances_val2017.json \
        data/coco_person/annotation_tiny80.odgt
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Tuple

PERSON_CAT = 1


def _repo_import():
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)


def coco_to_odgt(coco: dict, skip_empty: bool = False,
                 person_cat: int = PERSON_CAT) -> Tuple[List[dict], dict]:
    """Convert a COCO dict to ``.odgt`` records and an ``{ID: [h, w]}`` map.

    Args:
        coco: COCO instances json (``images``, ``annotations``).
        skip_empty: drop images without person annotations.
        person_cat: category id of person.
    """
    for key in ('images', 'annotations'):
        if key not in coco:
            raise KeyError(f'COCO json has no {key!r} key')
    by_img = {}
    for a in coco['annotations']:
        if a.get('category_id') == person_cat:
            by_img.setdefault(a['image_id'], []).append(a)
    records, id_hw = [], {}
    for img in sorted(coco['images'], key=lambda i: i['file_name']):
        anns = sorted(by_img.get(img['id'], []), key=lambda a: a['id'])
        if skip_empty and not anns:
            continue
        stem, ext = osp.splitext(img['file_name'])
        if ext.lower() != '.jpg':
            raise ValueError(f'image {img["file_name"]}: CrowdHumanDataset '
                             'reads ID.jpg files only')
        gtboxes = []
        for a in anns:
            x, y, w, h = [round(float(v), 2) for v in a['bbox']]
            crowd = bool(a.get('iscrowd', 0))
            gtboxes.append(dict(
                tag='mask' if crowd else 'person', fbox=[x, y, w, h],
                vbox=[x, y, w, h], hbox=[x, y, 0, 0],
                head_attr=dict(ignore=1),
                extra=dict(box_id=len(gtboxes), ignore=int(crowd),
                           coco_ann_id=a['id'])))
        records.append(dict(ID=stem, gtboxes=gtboxes))
        id_hw[stem] = [img['height'], img['width']]
    return records, id_hw


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='COCO person annotations -> CrowdHuman .odgt')
    p.add_argument('coco_json', help='COCO instances json')
    p.add_argument('out', help='output .odgt; id_hw_<stem>.json is '
                   'written beside it (stem without "annotation_")')
    p.add_argument('--skip-empty', action='store_true',
                   help='drop images without person annotations')
    return p.parse_args(argv)


def id_hw_path(odgt_path: str) -> str:
    """``dir/annotation_X.odgt`` -> ``dir/id_hw_X.json``."""
    stem = osp.splitext(osp.basename(odgt_path))[0]
    if stem.startswith('annotation_'):
        stem = stem[len('annotation_'):]
    return osp.join(osp.dirname(odgt_path), f'id_hw_{stem}.json')


def main(argv=None):
    args = parse_args(argv)
    _repo_import()
    from mmdet_odam.datasets.odgt import dump_odgt, write_text_atomic
    if not osp.isfile(args.coco_json):
        raise FileNotFoundError(f'COCO json {args.coco_json} does not exist')
    with open(args.coco_json) as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'{args.coco_json}: malformed JSON ({e})') from None
    records, id_hw = coco_to_odgt(coco, args.skip_empty)
    write_text_atomic(id_hw_path(args.out), json.dumps(id_hw))
    dump_odgt(records, args.out)
    n_p = sum(g['tag'] == 'person' for r in records for g in r['gtboxes'])
    n_i = sum(g['tag'] != 'person' for r in records for g in r['gtboxes'])
    print(f'{len(records)} images, {n_p} persons, {n_i} ignore regions -> '
          f'{args.out}, {id_hw_path(args.out)}')


if __name__ == '__main__':
    main()
