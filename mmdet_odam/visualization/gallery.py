"""``index.html`` gallery of an explanation folder.

Built by scanning the folder (``<stem>.npz``, ``<stem>_grid.jpg``,
``<stem>/det*.jpg``, ``<stem>_odam.mp4``), so results of earlier (resumed)
runs and of every distributed rank are all listed.
"""
import html
from pathlib import Path
from typing import List, Optional, Union
from urllib.parse import quote

import numpy as np

from ..utils.atomic import write_text_atomic


def _num_dets(npz: Path) -> Optional[int]:
    try:
        with np.load(npz) as z:
            return int(z['boxes'].shape[0])
    except Exception:  # a foreign/corrupt npz: list it without a count
        return None


def gallery_entries(out_dir: Union[str, Path]) -> List[dict]:
    """One dict per explained image / video found in ``out_dir``, sorted by
    name: ``stem``, ``kind`` (``image``/``video``), ``npz``, ``grid``,
    ``overlays`` (relative paths), ``num_dets``."""
    out_dir = Path(out_dir)
    entries = []
    for npz in sorted(out_dir.glob('*.npz')):
        stem = npz.stem
        grid = out_dir / f'{stem}_grid.jpg'
        odir = out_dir / stem
        entries.append(
            dict(
                stem=stem,
                kind='image',
                npz=npz.name,
                grid=grid.name if grid.is_file() else None,
                overlays=sorted(
                    (f'{stem}/{p.name}' for p in odir.glob('det*.jpg')),
                    key=_det_key) if odir.is_dir() else [],
                num_dets=_num_dets(npz)))
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


def _det_key(name: str):
    base = name.rsplit('/', 1)[-1]
    num = base[3:].split('_', 1)[0]
    return (int(num) if num.isdigit() else 1 << 30, base)


def write_gallery(out_dir: Union[str, Path],
                  title: str = 'ODAM explanations') -> Path:
    """Write ``out_dir/index.html`` listing every result in the folder."""
    out_dir = Path(out_dir)
    entries = gallery_entries(out_dir)
    q = lambda p: html.escape(quote(p))  # noqa: E731
    parts = [
        '<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
        f'<title>{html.escape(title)}</title>', '<style>',
        'body{font-family:sans-serif;margin:1em}'
        '.item{margin-bottom:2em;border-bottom:1px solid #ccc}'
        '.thumbs img{height:96px;margin:2px}'
        'img.grid{max-width:100%}', '</style></head><body>',
        f'<h1>{html.escape(title)}</h1>',
        f'<p>{len(entries)} result(s). Rows of a grid are detections '
        '(highest score first), columns are targets.</p>'
    ]
    for e in entries:
        parts.append(f'<div class="item" id="{html.escape(e["stem"])}">')
        if e['kind'] == 'image':
            n = '?' if e['num_dets'] is None else e['num_dets']
            parts.append(f'<h2>{html.escape(e["stem"])} ({n} detections)'
                         f' <a href="{q(e["npz"])}">npz</a></h2>')
            if e['grid']:
                parts.append(f'<a href="{q(e["grid"])}"><img class="grid" '
                             f'src="{q(e["grid"])}" loading="lazy"></a>')
            if e['overlays']:
                parts.append('<div class="thumbs">')
                for o in e['overlays']:
                    parts.append(f'<a href="{q(o)}"><img src="{q(o)}" '
                                 f'title="{html.escape(o)}" '
                                 'loading="lazy"></a>')
                parts.append('</div>')
        else:
            parts.append(f'<h2>{html.escape(e["stem"])} (video) '
                         f'<a href="{q(e["video"])}">{html.escape(e["video"])}'
                         '</a></h2>')
            parts.append(f'<video controls src="{q(e["video"])}" '
                         'style="max-width:100%"></video>')
            if e.get('frames'):
                parts.append(f'<p>per-frame npz: <a href="{q(e["frames"])}/">'
                             f'{html.escape(e["frames"])}/</a> '
                             f'({e["num_frames"]} frames)</p>')
        parts.append('</div>')
    parts.append('</body></html>')
    path = out_dir / 'index.html'
    write_text_atomic(path, '\n'.join(parts) + '\n')
    return path
