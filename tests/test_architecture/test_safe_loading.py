"""Files are untrusted input: every ``torch.load`` of the package, its
tools, benchmarks and tests passes ``weights_only=True`` (read with
``ast``; a test fails naming the file and the line)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ('mmdet_odam', 'tools', 'benchmarks', 'tests')
                 for p in (ROOT / d).rglob('*.py'))


def _torch_loads(tree: ast.AST):
    """The ``torch.load(...)`` calls in ``tree``."""
    for node in ast.walk(tree):
        func = getattr(node, 'func', None)
        if isinstance(node, ast.Call) and isinstance(func, ast.Attribute) \
                and func.attr == 'load' and isinstance(func.value, ast.Name) \
                and func.value.id == 'torch':
            yield node


def unsafe_loads(path: Path):
    """Line numbers of the ``torch.load`` calls in ``path`` without a
    literal ``weights_only=True``."""
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for call in _torch_loads(tree):
        kw = {k.arg: k.value for k in call.keywords}
        value = kw.get('weights_only')
        if not (isinstance(value, ast.Constant) and value.value is True):
            bad.append(call.lineno)
    return bad


def test_the_check_sees_unsafe_loads(tmp_path):
    src = tmp_path / 'example.py'
    src.write_text('import torch\n'
                   'a = torch.load("x", weights_only=True)\n'
                   'b = torch.load("x", weights_only=False)\n'
                   'c = torch.load("x")\n')
    assert unsafe_loads(src) == [3, 4]


def test_every_torch_load_is_weights_only():
    assert len(SOURCES) > 100  # the package, tools, benchmarks and tests
    bad = {str(p.relative_to(ROOT)): unsafe_loads(p) for p in SOURCES}
    bad = {p: lines for p, lines in bad.items() if lines}
    assert not bad, f'torch.load without weights_only=True: {bad}'
