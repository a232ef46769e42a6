"""``index.html`` gallery of an explanation folder.

Built by scanning the folder (``<stem>.npz``, ``<stem>_grid.jpg``,
``<stem>/det*.jpg``, the gallery files ``<stem>/{image,thumb}.jpg`` and
``<stem>/map<k>_<target>.jpg``, ``<stem>_odam.mp4``), so results of earlier
(resumed) runs and of every distributed rank are all listed. One HTML file
with its style and script inline: it works offline from ``file://``.
"""
import html
import json
from pathlib import Path
from typing import List, Optional, Tuple, Union
from urllib.parse import quote

import numpy as np

from ..utils.atomic import write_text_atomic
from .gallery_page import CSS, JS
from .writer import THUMB_WIDTH


def _detections(npz: Path) -> Optional[dict]:
    """Boxes, scores, label names, targets and image size of a result;
    ``None`` for a foreign / corrupt npz (listed without details)."""
    try:
        with np.load(npz) as z:
            k = int(z['boxes'].shape[0])
            names = [str(v) for v in z['label_names']] if 'label_names' in \
                z.files else [f'class {int(v)}' for v in z['labels']]
            return dict(
                boxes=z['boxes'].astype(float).round(1).tolist(),
                scores=z['scores'].astype(float).tolist(),
                labels=z['labels'].astype(int).tolist(), names=names[:k],
                targets=[str(t) for t in z['targets']],
                shape=[int(v) for v in z['ori_shape']])
    except Exception:  # noqa: BLE001
        return None


def gallery_entries(out_dir: Union[str, Path]) -> List[dict]:
    """One dict per explained image / video found in ``out_dir``, sorted by
    name: ``stem``, ``kind`` (``image``/``video``), ``npz``, ``grid``,
    ``overlays`` (relative paths), ``num_dets``, ``dets`` (see
    :func:`_detections`) and ``interactive`` (the gallery files of the
    writer exist: ``image.jpg``, ``thumb.jpg``, ``map<k>_<t>.jpg``)."""
    out_dir = Path(out_dir)
    entries = []
    for npz in sorted(out_dir.glob('*.npz')):
        stem = npz.stem
        grid = out_dir / f'{stem}_grid.jpg'
        odir = out_dir / stem
        dets = _detections(npz)
        entries.append(
            dict(
                stem=stem,
                kind='image',
                npz=npz.name,
                grid=grid.name if grid.is_file() else None,
                overlays=sorted(
                    (f'{stem}/{p.name}' for p in odir.glob('det*.jpg')),
                    key=_det_key) if odir.is_dir() else [],
                num_dets=None if dets is None else len(dets['boxes']),
                dets=dets, interactive=dets is not None and _has_maps(
                    odir, dets)))
    for vid in sorted(out_dir.glob('*_odam.*')):
        if vid.suffix.lower() in ('.tmp', ) or vid.name.startswith('.'):
            continue
        stem = vid.name[:-len('_odam' + vid.suffix)]
        frames = out_dir / f'{stem}_frames'
        entries.append(
            dict(
                stem=stem,
                kind='video',
                video=vid.name,
                frames=frames.name if frames.is_dir() else None,
                num_frames=len(list(frames.glob('*.npz')))
                if frames.is_dir() else None))
    return sorted(entries, key=lambda e: (e['stem'], e['kind']))


def _has_maps(odir: Path, dets: dict) -> bool:
    """The thumbnail, the image and the first and last detection's maps
    were written (cheap check, no listing of the folder)."""
    k, ts = len(dets['boxes']), dets['targets']
    need = ['image.jpg', 'thumb.jpg'] + ([f'map0_{ts[0]}.jpg',
                                          f'map{k - 1}_{ts[-1]}.jpg']
                                         if k and ts else [])
    return all((odir / n).is_file() for n in need)


def _det_key(name: str):
    base = name.rsplit('/', 1)[-1]
    num = base[3:].split('_', 1)[0]
    return (int(num) if num.isdigit() else 1 << 30, base)


def _thumb_size(shape) -> Tuple[int, int]:
    """(width, height) of ``thumb.jpg`` for an (H, W) image."""
    h, w = shape
    s = min(1.0, THUMB_WIDTH / w)
    return max(1, round(w * s)), max(1, round(h * s))


def _page_data(e: dict) -> dict:
    """What the page script needs to show the maps of one image."""
    d, stem = e['dets'], e['stem']
    return dict(
        stem=stem, width=d['shape'][1], height=d['shape'][0],
        targets=d['targets'], image=quote(f'{stem}/image.jpg'),
        map=quote(f'{stem}/map{{k}}_{{t}}.jpg', safe='/{}'),
        dets=[dict(box=b, score=round(s, 4), name=n,
                   color=f'hsl({(l * 137) % 360},90%,50%)')
              for b, s, n, l in zip(d['boxes'], d['scores'], d['names'],
                                    d['labels'])])


def _det_links(e: dict) -> List[str]:
    d, stem = e['dets'], html.escape(e['stem'])
    out = ['<ol class="dets">']
    for i, (n, s) in enumerate(zip(d['names'], d['scores'])):
        out.append(f'<li><a class="det" href="#img={stem}&amp;det={i}" '
                   f'data-img="{stem}" data-det="{i}">#{i} '
                   f'{html.escape(n)} {s:.2f}</a></li>')
    out.append('</ol>')
    return out


def _image_item(e: dict, q) -> List[str]:
    """The static HTML of one image: thumbnail (lazy), detections, links."""
    n = '?' if e['num_dets'] is None else e['num_dets']
    stem = html.escape(e['stem'])
    parts = [f'<div class="item" id="item-{stem}">',
             f'<h2>{stem} ({n} detections)</h2>']
    if e['interactive']:
        w, h = _thumb_size(e['dets']['shape'])
        img = (f'<img class="thumb" src="{q(e["stem"] + "/thumb.jpg")}" '
               f'width="{w}" height="{h}" loading="lazy" decoding="async" '
               f'alt="{stem}">')
        parts.append(f'<a class="det" href="#img={stem}&amp;det=0" '
                     f'data-img="{stem}" data-det="0">{img}</a>'
                     if n else img)
        parts += _det_links(e)
    else:  # written without the gallery files: the static overlays
        if e['grid']:
            parts.append(f'<a href="{q(e["grid"])}"><img class="thumb" '
                         f'src="{q(e["grid"])}" loading="lazy" '
                         'decoding="async"></a>')
        if e['overlays']:
            parts.append('<div class="thumbs">')
            parts += [f'<a href="{q(o)}"><img src="{q(o)}" '
                      f'title="{html.escape(o)}" loading="lazy" '
                      'decoding="async"></a>' for o in e['overlays']]
            parts.append('</div>')
    links = [f'<a href="{q(e["npz"])}">npz</a>']
    if e['grid']:
        links.append(f'<a href="{q(e["grid"])}">grid</a>')
    parts += [f'<div class="links">{" ".join(links)}</div>', '</div>']
    return parts


def _video_item(e: dict, q) -> List[str]:
    stem = html.escape(e['stem'])
    parts = [f'<div class="item video" id="item-{stem}">',
             f'<h2>{stem} (video) <a href="{q(e["video"])}">'
             f'{html.escape(e["video"])}</a></h2>',
             f'<video controls preload="none" src="{q(e["video"])}" '
             'style="max-width:100%"></video>']
    if e.get('frames'):
        parts.append(f'<p>per-frame npz: <a href="{q(e["frames"])}/">'
                     f'{html.escape(e["frames"])}/</a> '
                     f'({e["num_frames"]} frames)</p>')
    return parts + ['</div>']


def write_gallery(out_dir: Union[str, Path],
                  title: str = 'ODAM explanations') -> Path:
    """Write ``out_dir/index.html`` listing every result in the folder.

    Per image: a lazily loaded thumbnail with every box and the list of
    detections (label, score). Clicking one shows its map for every target
    at full size over the image, with an opacity slider and target
    toggles (script and style inline, see :mod:`.gallery_page`).
    """
    out_dir = Path(out_dir)
    entries = gallery_entries(out_dir)
    q = lambda p: html.escape(quote(p))  # noqa: E731
    data = [_page_data(e) for e in entries if e.get('interactive')]
    parts = [
        '<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
        f'<title>{html.escape(title)}</title>',
        f'<style>{CSS}</style></head><body>',
        f'<h1>{html.escape(title)}</h1>',
        f'<p>{len(entries)} result(s). Click a detection (highest score '
        'first) to see its maps for every target over the image.</p>',
        '<section id="viewer" hidden></section>', '<div class="items">'
    ]
    for e in entries:
        parts += _image_item(e, q) if e['kind'] == 'image' else \
            _video_item(e, q)
    blob = json.dumps(data, separators=(',', ':')).replace('</', '<\\/')
    parts += ['</div>',
              f'<script id="gallery-data" type="application/json">{blob}'
              '</script>', f'<script>{JS}</script>', '</body></html>']
    path = out_dir / 'index.html'
    write_text_atomic(path, '\n'.join(parts) + '\n')
    return path
