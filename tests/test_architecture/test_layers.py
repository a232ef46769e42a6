"""Layers import one way: utils / core (pure torch) <- paths <- adapters <-
explainers <- models / engine / apis; nms and losses depend on core only,
evaluation on core and nms.

Every import statement of the package (module level and inside functions)
is read with ``ast``; a test fails naming the file and the import."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / 'mmdet_odam'

#: subpackage -> subpackages of mmdet_odam it may import (besides itself).
ALLOWED = {
    'utils': set(),
    'core': {'utils'},
    'paths': {'core', 'utils'},
    'adapters': {'core', 'paths', 'utils'},
    'nms': {'core', 'utils'},
    'losses': {'core', 'utils'},
    'datasets': {'core', 'utils'},
    'evaluation': {'core', 'nms', 'utils'},
    'visualization': {'core', 'utils'},
    'explainers': {'core', 'paths', 'adapters', 'nms', 'utils'},
    'models': {'core', 'paths', 'adapters', 'explainers', 'nms', 'losses',
               'utils'},
    'engine': {'core', 'paths', 'adapters', 'explainers', 'nms', 'losses',
               'models', 'utils', 'visualization', 'evaluation'},
    'apis': {'core', 'paths', 'adapters', 'explainers', 'nms', 'utils',
             'visualization'},
}
#: subpackages that must not import MMDetection / MMCV / MMEngine at all.
PURE = {'core', 'paths'}
THIRD_PARTY = ('mmdet', 'mmcv', 'mmengine')


def _imports(path: Path):
    """(line, absolute module name) of every import in ``path``."""
    parts = list(path.relative_to(PKG.parent).with_suffix('').parts)
    pkg = parts[:-1]  # the package a relative import starts from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            yield node.lineno, name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _files(sub: str):
    return sorted((PKG / sub).rglob('*.py'))


@pytest.mark.parametrize('sub', sorted(ALLOWED))
def test_subpackage_imports_only_lower_layers(sub):
    bad = []
    for f in _files(sub):
        for line, name in _imports(f):
            parts = name.split('.')
            if parts[0] == 'mmdet_odam' and len(parts) > 1:
                other = parts[1]
                if other != sub and other not in ALLOWED[sub]:
                    bad.append(f'{f.relative_to(PKG)}:{line} imports {name}')
            if sub in PURE and parts[0] in THIRD_PARTY:
                bad.append(f'{f.relative_to(PKG)}:{line} imports {name} '
                           f'({sub} is pure torch)')
    assert not bad, '\n'.join(bad)


def test_every_subpackage_has_a_rule():
    subs = {p.name for p in PKG.iterdir()
            if p.is_dir() and (p / '__init__.py').exists()}
    assert subs - set(ALLOWED) <= {'testing'}, subs - set(ALLOWED)


def test_the_checker_sees_relative_imports():
    """The parser resolves ``from ..explainers import x`` in a subpackage
    file to ``mmdet_odam.explainers`` (so a violation cannot hide)."""
    names = {n for f in _files('apis') for _, n in _imports(f)}
    assert 'mmdet_odam.explainers.builder' in names
