"""tools/analysis_tools/supported_detectors.py writes one table row per zoo
family between the markers and keeps the rest of the page."""
import json
from pathlib import Path

import pytest

from mmdet_odam.testing import ZOO, load_tool

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ['RetinaNet', 'DETR']


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis_tools/supported_detectors.py')


def bench_json(path):
    """A bench_zoo.py JSON with one family measured (RetinaNet)."""
    res = dict(family='RetinaNet', ratio=2.5, meets_target=True, target=3.0)
    path.write_text(json.dumps(dict(size=320, tiny=False, repeats=3,
                                    detections=10, targets=['cls', 'left'],
                                    threads=1, results=[res], errors={})))
    return path


def table_lines(text):
    start = text.index('<!-- table:start -->')
    end = text.index('<!-- table:end -->')
    return [line for line in text[start:end].splitlines()
            if line.startswith('| ')]


def test_writes_one_row_per_family(tool, tmp_path):
    doc = tmp_path / 'supported.md'
    doc.write_text('# Title\n\nintro\n\n<!-- table:start -->\nold table\n'
                   '<!-- table:end -->\n\nafter\n')
    rc = tool.main(['--families', ','.join(FAMILIES), '--out', str(doc),
                    '--bench', str(bench_json(tmp_path / 'b.json'))])
    assert rc == 0
    text = doc.read_text()
    assert text.startswith('# Title\n\nintro\n') and text.endswith(
        '\n\nafter\n')
    assert 'old table' not in text
    rows = table_lines(text)[2:]  # header and separator first
    assert [r.split('|')[1].strip() for r in rows] == FAMILIES
    retina, detr = rows
    assert ZOO['RetinaNet'].config in retina and '2.5x' in retina
    assert 'all: dense/' in retina and '| yes |' in retina
    assert 'all: generic/autograd' in detr and detr.endswith('| – |')
    assert '10 detections x 2 targets' in text


def test_missing_markers_is_an_error(tool, tmp_path):
    doc = tmp_path / 'supported.md'
    doc.write_text('# no markers\n')
    with pytest.raises(ValueError, match='table:start'):
        tool.main(['--families', 'DETR', '--out', str(doc)])
    assert doc.read_text() == '# no markers\n'


def test_the_docs_page_has_the_markers():
    text = (REPO / 'docs' / 'supported_detectors.md').read_text()
    assert text.index('<!-- table:start -->') < text.index(
        '<!-- table:end -->')
