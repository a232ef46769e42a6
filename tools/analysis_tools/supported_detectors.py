"""Write the table of supported detectors into docs/supported_detectors.md.

One row per family of the zoo (:data:`mmdet_odam.testing.ZOO`, the list the
contract test checks): its mmdet config, the path each target takes
(``explain_support`` of the family's model), whether the maps are exact, and
optionally the explain / predict time ratio measured by
``benchmarks/bench_zoo.py --json``. The table replaces what lies between
the markers ``<!-- table:start -->`` and ``<!-- table:end -->``.

Example::

    python benchmarks/bench_zoo.py --json work_dirs/bench_zoo.json
    python tools/analysis_tools/supported_detectors.py \\
        --bench work_dirs/bench_zoo.json
"""
import argparse
import json
import os.path as osp
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

START, END = '<!-- table:start -->', '<!-- table:end -->'
TARGETS = ['cls', 'left', 'top', 'right', 'bottom', 'combined']
MMDET_CONFIGS = ('https://github.com/open-mmlab/mmdetection/tree/v3.3.0/'
                 'configs/')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--families', nargs='+', default=None,
                   help='zoo families (default: all)')
    p.add_argument('--bench', default=None,
                   help='JSON written by benchmarks/bench_zoo.py --json')
    p.add_argument('--out', default=None,
                   help='Markdown file (default docs/supported_detectors.md)')
    args = p.parse_args(argv)
    if args.families:
        args.families = [f for v in args.families
                         for f in v.replace(',', ' ').split()]
    return args


def path_cell(rows):
    """``'all: dense/patch'`` or ``'cls: a/b; left, top: c/d'``."""
    by_path = {}
    for r in rows:
        by_path.setdefault(f"{r['adapter']}/{r['path']}", []).append(
            str(r['target']))
    if len(by_path) == 1:
        return f'all: {next(iter(by_path))}'
    return '; '.join(f"{', '.join(t)}: {p}" for p, t in by_path.items())


def exact_cell(rows):
    flags = {bool(r['exact']) for r in rows}
    if flags == {True}:
        return 'yes'
    if flags == {False}:
        return 'no'
    return ', '.join(str(r['target']) for r in rows if r['exact']) + \
        ' (others approximate)'


def load_bench(path):
    """family -> result dict, and the run's settings (or ``{}``)."""
    if path is None:
        return {}, {}
    data = json.loads(Path(path).read_text())
    return {r['family']: r for r in data['results']}, data


def ratio_cell(bench, name):
    r = bench.get(name)
    if r is None:
        return '–'
    mark = '' if r['meets_target'] else f" (target {r['target']:.0f}x)"
    return f"{r['ratio']:.1f}x{mark}"


def family_row(entry, bench):
    """Markdown row of one family."""
    from mmdet_odam.apis import explain_support
    from mmdet_odam.testing import build_zoo_model
    model = build_zoo_model(entry)
    try:
        rows = explain_support(model, targets=TARGETS).rows
        paths, exact = path_cell(rows), exact_cell(rows)
        second = bench.get(entry.name, {}).get('second_stage')
        if second not in (None, 'autograd'):
            paths += f' (second stage: {second.replace("_", " ")})'
    except Exception as e:  # noqa: BLE001  (the row says so)
        paths, exact = f'not supported: {type(e).__name__}: {e}', 'no'
    link = f'[{osp.basename(entry.config)}]({MMDET_CONFIGS}{entry.config})'
    return (f'| {entry.name} | {link} | {paths} | {exact} | '
            f'{ratio_cell(bench, entry.name)} |')


def table(entries, bench, settings):
    lines = ['| family | config | path per target | exact | '
             'explain / predict |', '| --- | --- | --- | --- | --- |']
    lines += [family_row(e, bench) for e in entries]
    if settings:
        kind = ("the contract test's shrunk models" if settings.get('tiny')
                else "mmdet's own model sizes")
        lines += ['', f"explain / predict: {settings['detections']} "
                  f"detections x {len(settings['targets'])} targets "
                  f"({', '.join(settings['targets'])}), one CPU thread, "
                  f"{kind}, random weights, input {settings['size']} px, "
                  f"median of {settings['repeats']} runs "
                  '(`benchmarks/bench_zoo.py`). Target: 3x on a fast path, '
                  '5x on the generic path.']
    return '\n'.join(lines)


def replace_table(text, body, path):
    """``text`` with ``body`` between the markers."""
    if START not in text or END not in text or \
            text.index(START) > text.index(END):
        raise ValueError(f'{path} has no {START} ... {END} block')
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f'{head}{START}\n{body}\n{END}{tail}'


def main(argv=None):
    args = parse_args(argv)
    from mmdet_odam.testing import select
    from mmdet_odam.utils import repo_root, write_text_atomic
    out = Path(args.out or repo_root() / 'docs' / 'supported_detectors.md')
    if not out.is_file():
        raise FileNotFoundError(f'Markdown file not found: {out}')
    bench, settings = load_bench(args.bench)
    entries = list(select(args.families))
    text = replace_table(out.read_text(), table(entries, bench, settings),
                         out)
    write_text_atomic(out, text)
    print(f'{out}: {len(entries)} families')
    return 0


if __name__ == '__main__':
    sys.exit(main())
