"""Per-object localisation metrics of one map, and their summary in the
layout of the paper's Tab. 1, 3a and 4."""
from typing import Dict, List, Optional, Sequence

import numpy as np
from torch import Tensor

from .bootstrap import bootstrap_mean
from .compactness import compactness
from .odi import odi
from .pointing_game import energy_in_region, pointing_game
from .regions import box_to_mask, boxes_to_masks
from .vea import VEA_THRESHOLDS, curve_auc, vea_auc, vea_curve

#: (key, column title, higher is better) of each table.
TAB1 = (('deletion_auc', 'Del.', False), ('insertion_auc', 'Ins.', True),
        ('vea_auc', 'VEA', True))
TAB3 = (('odi_box', 'ODI box (%)', False), ('odi_mask', 'ODI mask (%)',
                                            False))
TAB4 = (('pg_box', 'PG(b) (%)', True), ('pg_mask', 'PG(m) (%)', True),
        ('enpg_box', 'enPG(b) (%)', True), ('enpg_mask', 'enPG(m) (%)',
                                            True), ('compactness', 'Comp.',
                                                    False))
PERCENT = ('odi_box', 'odi_mask', 'pg_box', 'pg_mask', 'enpg_box',
           'enpg_mask')


def localisation_metrics(heat: Tensor, boxes, target: int,
                         masks: Optional[Tensor] = None) -> Dict[str, object]:
    """All map-only metrics of the object ``target`` of an image.

    Args:
        heat (Tensor): (H, W) map of the explained object.
        boxes: (N, 4) xyxy GT boxes of all (non-crowd) objects of the image.
        target (int): index of the explained object.
        masks (Tensor, optional): (N, H, W) bool GT masks; without them the
            mask metrics are absent (``None``). An empty mask gives its
            metrics as misses / 0 / ODI of the other masks.

    Returns:
        dict: ``pg_box``, ``enpg_box``, ``compactness``, ``odi_box`` and, with
        masks, ``pg_mask``, ``enpg_mask``, ``odi_mask``, ``vea`` (curve),
        ``vea_auc``.
    """
    shape = tuple(heat.shape)
    box = [float(v) for v in boxes[target]]
    bmask = box_to_mask(box, shape)
    out = dict(
        pg_box=pointing_game(heat, bmask),
        enpg_box=energy_in_region(heat, bmask),
        compactness=compactness(heat, box),
        odi_box=odi(heat, boxes_to_masks(boxes, shape), target))
    if masks is not None:
        m = masks[target].bool()
        curve = vea_curve(heat, m)
        out.update(
            pg_mask=pointing_game(heat, m),
            enpg_mask=energy_in_region(heat, m),
            odi_mask=odi(heat, masks.bool(), target),
            vea=curve.tolist(),
            vea_auc=vea_auc(curve))
    return out


def summarize(records: Sequence[dict],
              methods: Sequence[str]) -> Dict[str, dict]:
    """Mean of each metric per method over the objects explained by *all*
    ``methods`` (like with like, as the authors' scripts). Mask metrics are
    averaged over the objects that have a mask. Mean curves are included.

    Each mean comes with ``{metric}_ci`` = [low, high], its 95 % bootstrap
    interval over images (records' ``img_id``; each record its own image
    when absent), and ``n_images``.

    Args:
        records (list[dict]): one per (object, method) with keys ``key``
            (object id), ``method``, ``img_id`` and the metric values.

    Returns:
        dict: method -> {metric: mean, metric_ci, 'n_objects': n,
        'n_images': m, curves...}.
    """
    by_obj: Dict[str, Dict[str, dict]] = {}
    for r in records:
        by_obj.setdefault(r['key'], {})[r['method']] = r
    common = [k for k, v in by_obj.items() if all(m in v for m in methods)]
    out = {}
    for m in methods:
        rows = [by_obj[k][m] for k in common]
        res = dict(n_objects=len(rows), n_images=len(
            {str(r.get('img_id', r['key'])) for r in rows}))
        for key in ('pg_box', 'enpg_box', 'compactness', 'odi_box', 'pg_mask',
                    'enpg_mask', 'odi_mask', 'vea_auc', 'deletion_auc',
                    'insertion_auc', 'sanity_pearson', 'sanity_spearman'):
            sel = [r for r in rows if r.get(key) is not None]
            if sel:
                iv = bootstrap_mean([r[key] for r in sel],
                                    [r.get('img_id', r['key']) for r in sel])
                res[key] = iv.value
                res[f'{key}_ci'] = [iv.low, iv.high]
                res[f'n_{key}'] = len(sel)
        for key in ('vea', 'deletion', 'insertion'):
            curves = [r[key] for r in rows if r.get(key) is not None]
            if curves:
                res[key] = np.mean(np.asarray(curves, float), 0).tolist()
        # AUC of the mean curve (as the authors' averaged-curve plots)
        if 'vea' in res:
            res['vea_auc_of_mean'] = vea_auc(res['vea'], VEA_THRESHOLDS)
        for key in ('deletion', 'insertion'):
            if key in res:
                res[f'{key}_auc_of_mean'] = curve_auc(res[key])
        out[m] = res
    return out


def _fmt_one(key, val):
    if key in PERCENT:
        return f'{100 * val:.1f}'
    if key == 'vea_auc':
        return f'{val:.3f}'
    return f'{val:.2f}'


def _fmt(key, val, ci=None):
    """``value [low, high]`` (the interval when known)."""
    if val is None:
        return 'n/a'
    text = _fmt_one(key, val)
    if ci is not None and all(np.isfinite(ci)):
        text += f' [{_fmt_one(key, ci[0])}, {_fmt_one(key, ci[1])}]'
    return text


def _table(summary, cols, title) -> List[str]:
    methods = list(summary)
    lines = [f'**{title}**', '',
             '| Method | ' + ' | '.join(
                 f'{c} {"↑" if up else "↓"}' for _, c, up in cols) + ' |',
             '| --- ' * (len(cols) + 1) + '|']
    for m in methods:
        lines.append(f'| {m} | ' + ' | '.join(
            _fmt(k, summary[m].get(k), summary[m].get(f'{k}_ci'))
            for k, _, _ in cols) + ' |')
    return lines + ['']


def markdown_tables(summary: Dict[str, dict], note: str = '') -> str:
    """Markdown tables in the layout of the paper's Tab. 1, 3a and 4."""
    n = {m: s.get('n_objects', 0) for m, s in summary.items()}
    imgs = {m: s.get('n_images', 0) for m, s in summary.items()}
    lines = [f'Objects per method: {n}; images: {imgs}. Each figure: mean '
             f'[95 % bootstrap interval over images].', '']
    if note:
        lines += [note, '']
    lines += _table(summary, TAB1, 'Tab. 1 - faithfulness (AUC)')
    lines += _table(summary, TAB3, 'Tab. 3a - object discrimination index')
    lines += _table(summary, TAB4, 'Tab. 4 - pointing game and compactness')
    if any('sanity_pearson' in s for s in summary.values()):
        lines += _table(summary, (('sanity_pearson', 'Pearson', False),
                                  ('sanity_spearman', 'Spearman', False)),
                        'Sanity check (App. A.5.1): correlation of the maps '
                        'of the trained and the randomised model (lower = '
                        'the map depends more on the weights)')
    return '\n'.join(lines)
