# Copyright (c) mmdet-odam contributors. Licensed under the Apache License 2.0.
"""Build CrowdHuman-style crowded scenes from real COCO photographs.

Person instances are cut out of COCO images with their masks and pasted,
with scale jitter and occlusion order (a later paste hides an earlier one;
persons are pasted far-to-near by the y of their feet), onto real background
photographs (the images of the same COCO set that contain no person, randomly
cropped and flipped). Each pasted person's full box ``fbox`` is known even
when others hide part of it; ``vbox`` is the box of its visible pixels.

Output (one split a call, written to a temporary folder and renamed, so no
half-written split ever appears under the final name)::

    OUT_DIR/SPLIT/images/SPLIT_00000.jpg ...
    OUT_DIR/SPLIT/annotation_SPLIT.odgt   # CrowdHuman: fbox, vbox, hbox, tag
    OUT_DIR/SPLIT/id_hw_SPLIT.json        # {ID: [h, w]} for CrowdHumanDataset
    OUT_DIR/SPLIT/crowd_SPLIT.json        # COCO json: bbox = fbox,
                                          # segmentation = visible mask (RLE)
    OUT_DIR/SPLIT/sources_SPLIT.json      # source images / annotation ids

``hbox`` (head) is not known for pasted persons: it is written as a zero-size
box at the top-left of ``fbox`` with ``head_attr.ignore = 1``. Persons whose
visible share is below ``--min-visible`` get ``extra.ignore = 1``.

Example::

    python tools/dataset_converters/make_crowd.py \
        ../shared/data/coco128_train2017 data/crowd_scenes --split train \
        --num-images 800 --persons-per-image 6 16 --overlap-pairs 2.4 --seed 0
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

PERSON_CAT = 1


@dataclass
class PersonSource:
    """A person cut out of a COCO image: crop (h, w, 3) BGR, mask (h, w)."""
    ann_id: int
    image_file: str
    crop: np.ndarray
    mask: np.ndarray


def _find_ann_file(data_root: str) -> str:
    ann_dir = osp.join(data_root, 'annotations')
    files = sorted(f for f in os.listdir(ann_dir)
                   if f.startswith('instances_') and f.endswith('.json')) \
        if osp.isdir(ann_dir) else []
    if len(files) != 1:
        raise FileNotFoundError(
            f'expected one annotations/instances_*.json under {data_root}, '
            f'found {files}; pass --ann-file')
    return osp.join(ann_dir, files[0])


def read_image(path: str) -> np.ndarray:
    """Read a BGR image; a missing or undecodable file raises naming it."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path} does not exist')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'cannot decode image {path}')
    return img


def load_coco_set(data_root: str, ann_file: Optional[str] = None,
                  img_dir: str = 'images', min_height: int = 64,
                  min_area: float = 2000.,
                  licenses: Optional[Sequence[int]] = None,
                  max_fill: float = 0.8
                  ) -> Tuple[List[PersonSource], List[str], dict]:
    """Cut person instances out of a COCO set and list person-free images.

    Args:
        data_root: folder with ``annotations/instances_*.json`` and
            ``images/``.
        ann_file: COCO json; default the one under ``annotations/``.
        img_dir: image folder relative to ``data_root``.
        min_height: minimum box height (px) of a person to cut out.
        min_area: minimum mask area (px) of a person to cut out.
        max_fill: skip persons whose mask fills more than this share of
            their box (box-shaped masks paste as rectangles).
        licenses: use only images whose ``license`` id is in this list
            (e.g. ``[4, 5]``: CC BY, CC BY-SA); None: all.

    Returns:
        persons (sorted by annotation id), background image paths (images
        without any person annotation, sorted) and the COCO ``images`` table
        by file name.
    """
    from pycocotools.coco import COCO
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'data root {data_root} does not exist')
    ann_file = ann_file or _find_ann_file(data_root)
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file {ann_file} does not exist')
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    persons, backgrounds = [], []
    images = {}
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        images[info['file_name']] = info
        if licenses is not None and info.get('license') not in licenses:
            continue
        path = osp.join(data_root, img_dir, info['file_name'])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id,
                                            catIds=[PERSON_CAT]))
        if not anns:
            backgrounds.append(path)
            continue
        keep = [a for a in anns if not a['iscrowd']
                and a['bbox'][3] >= min_height and a['area'] >= min_area]
        if not keep:
            continue
        img = read_image(path)
        for a in sorted(keep, key=lambda a: a['id']):
            mask = coco.annToMask(a)
            ys, xs = np.nonzero(mask)
            if len(ys) < min_area:
                continue
            if len(ys) > max_fill * (np.ptp(ys) + 1) * (np.ptp(xs) + 1):
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            persons.append(PersonSource(
                a['id'], info['file_name'], img[y0:y1, x0:x1].copy(),
                mask[y0:y1, x0:x1].astype(np.uint8)))
    persons.sort(key=lambda p: p.ann_id)
    return persons, backgrounds, images


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) -
             inter)
    return inter / union if union > 0 else 0.


def count_overlap_pairs(boxes: Sequence[Sequence[float]],
                        thr: float = 0.5) -> int:
    """Number of box pairs with IoU > ``thr``."""
    n = 0
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            n += box_iou(boxes[i], boxes[j]) > thr
    return n


def _background(paths: List[str], rng: np.random.Generator,
                size: Tuple[int, int], cache: Dict[str, np.ndarray]):
    w, h = size
    path = paths[rng.integers(len(paths))]
    if path not in cache:
        cache[path] = read_image(path)
    img = cache[path]
    ih, iw = img.shape[:2]
    # random crop with the output aspect ratio, 60-100 % of the largest one
    s = rng.uniform(0.6, 1.0)
    cw = min(iw, ih * w / h) * s
    ch = cw * h / w
    x0 = rng.uniform(0, iw - cw)
    y0 = rng.uniform(0, ih - ch)
    crop = img[int(y0):int(y0 + ch), int(x0):int(x0 + cw)]
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop), path


@dataclass
class _Placed:
    src: PersonSource
    box: Tuple[float, float, float, float]  # xyxy float, unclipped
    flip: bool


def _place(src: PersonSource, height: float, cx: float, bottom: float,
           flip: bool) -> _Placed:
    sh, sw = src.mask.shape
    width = height * sw / sh
    return _Placed(src, (cx - width / 2, bottom - height, cx + width / 2,
                         bottom), flip)


def compose_scene(persons: List[PersonSource], backgrounds: List[str],
                  rng: np.random.Generator, size: Tuple[int, int],
                  n_persons: int, n_pairs: int,
                  height_range: Tuple[float, float] = (0.2, 0.7),
                  max_upscale: float = 2.5,
                  bg_cache: Optional[dict] = None):
    """Compose one scene.

    Returns:
        image (H, W, 3) BGR uint8, list of (source, fbox xyxy int,
        visible mask (H, W) bool), background path.
    """
    w, h = size
    img, bg_path = _background(backgrounds, rng, size,
                               bg_cache if bg_cache is not None else {})
    n_pairs = min(n_pairs, n_persons // 2)
    n_base = n_persons - n_pairs
    chosen = rng.choice(len(persons), size=n_persons,
                        replace=n_persons > len(persons))
    placed: List[_Placed] = []

    def height_for(src):
        hh = rng.uniform(*height_range) * h
        return min(hh, max_upscale * src.mask.shape[0])

    for k in range(n_base):
        src = persons[chosen[k]]
        hh = height_for(src)
        bottom = rng.uniform(0.45 * h + 0.5 * hh * (hh / h), 1.03 * h)
        bottom = max(bottom, hh * 0.9)
        placed.append(_place(src, hh, rng.uniform(0.08 * w, 0.92 * w),
                             bottom, bool(rng.random() < 0.5)))
    # partners that overlap an already placed person with IoU > 0.5
    for k in range(n_base, n_persons):
        src = persons[chosen[k]]
        anchor = placed[rng.integers(n_base)]
        ax0, ay0, ax1, ay1 = anchor.box
        aw, ah = ax1 - ax0, ay1 - ay0
        best = None
        for _ in range(20):
            hh = ah * rng.uniform(0.9, 1.12)
            dx = rng.choice([-1, 1]) * rng.uniform(0.08, 0.35) * aw
            dy = rng.uniform(-0.06, 0.06) * ah
            cand = _place(src, hh, (ax0 + ax1) / 2 + dx, ay1 + dy,
                          bool(rng.random() < 0.5))
            if box_iou(cand.box, anchor.box) > 0.55:
                best = cand
                break
        if best is None:  # aspect ratios too different: reuse anchor's shape
            best = _place(src, ah, (ax0 + ax1) / 2 + 0.1 * aw, ay1,
                          bool(rng.random() < 0.5))
            best.box = (ax0 + 0.1 * aw, ay0, ax1 + 0.1 * aw, ay1)
        placed.append(best)
    # paste far-to-near: smaller bottom y first
    placed.sort(key=lambda p: p.box[3])
    owner = np.full((h, w), -1, np.int32)
    full_masks = []
    for idx, p in enumerate(placed):
        x0, y0, x1, y1 = p.box
        pw, ph = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
        crop, mask = p.src.crop, p.src.mask
        if p.flip:
            crop, mask = crop[:, ::-1], mask[:, ::-1]
        crop = cv2.resize(np.ascontiguousarray(crop), (pw, ph),
                          interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(np.ascontiguousarray(mask).astype(np.float32),
                           (pw, ph), interpolation=cv2.INTER_LINEAR)
        ix0, iy0 = int(round(x0)), int(round(y0))
        # clip the paste window to the image
        cx0, cy0 = max(ix0, 0), max(iy0, 0)
        cx1, cy1 = min(ix0 + pw, w), min(iy0 + ph, h)
        full = np.zeros((h, w), bool)
        if cx1 > cx0 and cy1 > cy0:
            sl = (slice(cy0 - iy0, cy1 - iy0), slice(cx0 - ix0, cx1 - ix0))
            a = alpha[sl]
            hard = a >= 0.5
            soft = cv2.GaussianBlur(a, (3, 3), 0)[..., None]
            region = img[cy0:cy1, cx0:cx1].astype(np.float32)
            img[cy0:cy1, cx0:cx1] = np.clip(
                region * (1 - soft) + crop[sl].astype(np.float32) * soft, 0,
                255).astype(np.uint8)
            full[cy0:cy1, cx0:cx1] = hard
            owner[cy0:cy1, cx0:cx1][hard] = idx
        full_masks.append(full)
    out = []
    for idx, (p, full) in enumerate(zip(placed, full_masks)):
        ys, xs = np.nonzero(full)
        if len(ys) == 0:
            continue
        fbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                int(ys.max()) + 1)
        out.append((p.src, fbox, owner == idx, int(full.sum())))
    return img, out, bg_path


def _mask_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def _xywh(b):
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def make_split(data_root: str, out_dir: str, split: str, num_images: int,
               persons_per_image: Tuple[int, int] = (6, 16),
               overlap_pairs: float = 2.4, img_scale: Tuple[int, int] = (
                   640, 480), seed: int = 0, min_visible: float = 0.1,
               jpg_quality: int = 90, ann_file: Optional[str] = None,
               height_range: Tuple[float, float] = (0.2, 0.7),
               min_height: int = 64,
               licenses: Optional[Sequence[int]] = None,
               logger=print) -> dict:
    """Generate one split; returns summary statistics.

    Args:
        data_root: COCO set root (``annotations/``, ``images/``).
        out_dir: output root; the split goes to ``out_dir/split``.
        split: split name (``train``, ``val`` ...); image IDs are
            ``{split}_{i:05d}``.
        num_images: number of scenes.
        persons_per_image: inclusive range of pasted persons per scene.
        overlap_pairs: mean number of added person pairs per image whose
            full boxes overlap with IoU > 0.5 (CrowdHuman val: 2.4).
        img_scale: output (width, height).
        seed: random seed; the same arguments give identical files.
        min_visible: persons whose visible share is lower are ignored.
        jpg_quality: JPEG quality.
        licenses: COCO image licence ids to draw persons and backgrounds
            from (None: all).
    """
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    lo, hi = persons_per_image
    if not 1 <= lo <= hi:
        raise ValueError(f'persons_per_image must be 1 <= min <= max, got '
                         f'{persons_per_image}')
    if overlap_pairs < 0:
        raise ValueError(f'overlap_pairs must be >= 0, got {overlap_pairs}')
    if not 0 <= min_visible < 1:
        raise ValueError(f'min_visible must be in [0, 1), got {min_visible}')
    persons, backgrounds, images = load_coco_set(
        data_root, ann_file, min_height=min_height, licenses=licenses)
    if not persons:
        raise ValueError(f'no person instance under {data_root} is large '
                         f'enough (box height >= {min_height} px)')
    if not backgrounds:
        raise ValueError(f'no person-free background image under {data_root}')
    rng = np.random.default_rng(seed)
    size = (int(img_scale[0]), int(img_scale[1]))
    os.makedirs(out_dir, exist_ok=True)
    final = osp.join(out_dir, split)
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=f'.{split}.tmp-')
    try:
        os.makedirs(osp.join(tmp, 'images'))
        odgt_lines, id_hw = [], {}
        coco = dict(images=[], annotations=[], categories=[
            dict(id=1, name='person', supercategory='person')])
        sources = dict(data_root=str(data_root), source_ann_ids=[],
                       background_images=[])
        src_ids, bg_used = set(), set()
        n_persons_tot = n_pairs_tot = n_ignored = 0
        bg_cache = {}
        for i in range(num_images):
            n = int(rng.integers(lo, hi + 1))
            k = int(np.floor(overlap_pairs) +
                    (rng.random() < overlap_pairs - np.floor(overlap_pairs)))
            img, items, bg = compose_scene(
                persons, backgrounds, rng, size, n, k,
                height_range=height_range, bg_cache=bg_cache)
            bg_used.add(osp.basename(bg))
            img_id = f'{split}_{i:05d}'
            ok = cv2.imwrite(osp.join(tmp, 'images', f'{img_id}.jpg'), img,
                             [cv2.IMWRITE_JPEG_QUALITY, jpg_quality])
            if not ok:
                raise OSError(f'cannot write {img_id}.jpg under {tmp}')
            h, w = img.shape[:2]
            id_hw[img_id] = [h, w]
            coco['images'].append(dict(id=i + 1, file_name=f'{img_id}.jpg',
                                       height=h, width=w))
            gtboxes, valid = [], []
            for j, (src, fbox, vis, full_area) in enumerate(items):
                vis_area = int(vis.sum())
                vis_frac = vis_area / max(full_area, 1)
                ignore = int(vis_frac < min_visible or vis_area == 0)
                if vis_area:
                    ys, xs = np.nonzero(vis)
                    vbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                            int(ys.max()) + 1)
                else:
                    vbox = (fbox[0], fbox[1], fbox[0], fbox[1])
                src_ids.add(src.ann_id)
                gtboxes.append(dict(
                    tag='person', fbox=_xywh(fbox), vbox=_xywh(vbox),
                    hbox=[fbox[0], fbox[1], 0, 0],
                    head_attr=dict(ignore=1),
                    extra=dict(box_id=j, ignore=ignore,
                               occ=round(1 - vis_frac, 3),
                               source_ann_id=src.ann_id,
                               source_image=src.image_file)))
                coco['annotations'].append(dict(
                    id=len(coco['annotations']) + 1, image_id=i + 1,
                    category_id=1, bbox=_xywh(fbox), vbox=_xywh(vbox),
                    area=float(vis_area), iscrowd=0, ignore=ignore,
                    segmentation=_mask_rle(vis),
                    source_ann_id=src.ann_id))
                if not ignore:
                    valid.append(fbox)
                n_ignored += ignore
            n_persons_tot += len(valid)
            n_pairs_tot += count_overlap_pairs(valid)
            odgt_lines.append(json.dumps(dict(ID=img_id, gtboxes=gtboxes),
                                         separators=(',', ':')))
        with open(osp.join(tmp, f'annotation_{split}.odgt'), 'w') as f:
            f.write('\n'.join(odgt_lines) + '\n')
        with open(osp.join(tmp, f'id_hw_{split}.json'), 'w') as f:
            json.dump(id_hw, f)
        with open(osp.join(tmp, f'crowd_{split}.json'), 'w') as f:
            json.dump(coco, f)
        sources['source_ann_ids'] = sorted(src_ids)
        sources['background_images'] = sorted(bg_used)
        used = {p.image_file for p in persons if p.ann_id in src_ids} | bg_used
        sources['images'] = [
            {k: images[f].get(k) for k in ('file_name', 'license',
                                           'flickr_url', 'coco_url')}
            for f in sorted(used)]
        with open(osp.join(tmp, f'sources_{split}.json'), 'w') as f:
            json.dump(sources, f)
        # swap in atomically: old split (if any) is moved away first
        old = None
        if osp.exists(final):
            old = tempfile.mkdtemp(dir=out_dir, prefix=f'.{split}.old-')
            os.replace(final, osp.join(old, split))
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = dict(split=split, images=num_images,
                 persons_per_image=n_persons_tot / num_images,
                 iou50_pairs_per_image=n_pairs_tot / num_images,
                 ignored=n_ignored, source_persons=len(src_ids),
                 out=final)
    logger(f'{split}: {num_images} images, '
           f'{stats["persons_per_image"]:.1f} persons/image, '
           f'{stats["iou50_pairs_per_image"]:.2f} pairs IoU>0.5/image, '
           f'{n_ignored} ignored (visible < {min_visible:.0%}), '
           f'{len(src_ids)} source persons -> {final}')
    return stats


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Build CrowdHuman-style crowded scenes from COCO '
        'person instances pasted onto real person-free photographs.')
    p.add_argument('data_root', help='COCO set root: annotations/, images/')
    p.add_argument('out_dir', help='output root (split goes to OUT/SPLIT)')
    p.add_argument('--split', default='train')
    p.add_argument('--ann-file', default=None,
                   help='COCO json (default: annotations/instances_*.json)')
    p.add_argument('--num-images', type=int, default=200)
    p.add_argument('--persons-per-image', type=int, nargs=2, default=[6, 16],
                   metavar=('MIN', 'MAX'))
    p.add_argument('--overlap-pairs', type=float, default=2.4,
                   help='mean number of added person pairs per image with '
                   'full-box IoU > 0.5 (CrowdHuman val: 2.4)')
    p.add_argument('--img-scale', type=int, nargs=2, default=[640, 480],
                   metavar=('W', 'H'))
    p.add_argument('--height-range', type=float, nargs=2, default=[0.2, 0.7],
                   metavar=('MIN', 'MAX'),
                   help='person height as a share of the image height')
    p.add_argument('--min-visible', type=float, default=0.1)
    p.add_argument('--min-height', type=int, default=64,
                   help='minimum source person box height (px)')
    p.add_argument('--jpg-quality', type=int, default=90)
    p.add_argument('--licenses', type=int, nargs='+', default=None,
                   help='only COCO images with these licence ids (e.g. 4 5 '
                   'for CC BY, CC BY-SA)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    make_split(args.data_root, args.out_dir, args.split, args.num_images,
               tuple(args.persons_per_image), args.overlap_pairs,
               tuple(args.img_scale), args.seed, args.min_visible,
               args.jpg_quality, args.ann_file, tuple(args.height_range),
               args.min_height, args.licenses)


if __name__ == '__main__':
    main()
