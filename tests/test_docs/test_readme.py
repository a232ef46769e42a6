"""The README and docs/ pages: short README, working relative links (and
anchors), every page reachable from the README, no internal project
vocabulary (issue numbers, sessions, machines, the data folder's path)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
PAGES = [README] + sorted((ROOT / 'docs').glob('*.md'))
MAX_README_LINES = 300

LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.M | re.S)
REPO_PATH = re.compile(
    r'(?<![\w./-])((?:configs|checkpoints|tools|demo|benchmarks|mmdet_odam|'
    r'tests|requirements|docs)/[^\s`\'")\]|#]+)')
BANNED = {
    'internal issue number': re.compile(r'\bissues?\s*#?\s*\d', re.I),
    'session': re.compile(r'session', re.I),
    'machine name': re.compile(r'H200|\b\d+-core\b', re.I),
    'project folder path': re.compile(r'\.\./shared'),
}


def _prose(text: str) -> str:
    """Markdown without fenced code blocks (links there are not links)."""
    return FENCE.sub('', text)


def _relative_links(page: Path):
    """(target path, anchor or None) of every relative link of ``page``."""
    for target in LINK.findall(_prose(page.read_text(encoding='utf-8'))):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):  # http:, mailto:
            continue
        path, _, anchor = target.partition('#')
        dest = (page.parent / path).resolve() if path else page
        yield target, dest, anchor or None


def _repo_paths(page: Path):
    """Concrete repository paths (``configs/x.py``...) named in ``page``,
    code blocks included; patterns (``*``, ``{a,b}``, ``<stem>``) skipped."""
    for m in REPO_PATH.finditer(page.read_text(encoding='utf-8')):
        path = m.group(1).rstrip('.,:;')
        if not re.search(r'[*{}<>]|\.\.\.', path):
            yield path


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def _anchors(page: Path) -> set:
    heads = re.findall(r'^#{1,6}\s+(.+?)\s*#*\s*$',
                       _prose(page.read_text(encoding='utf-8')), re.M)
    return {_slug(h) for h in heads}


def test_slug_matches_github():
    assert _slug('Odam-NMS pipeline') == 'odam-nms-pipeline'
    assert _slug('Dense-head explanations (batched patch path)') == \
        'dense-head-explanations-batched-patch-path'
    assert _slug('`OdamHook`: while `tools/test.py` runs') == \
        'odamhook-while-toolstestpy-runs'


def test_readme_is_short():
    n = len(README.read_text(encoding='utf-8').splitlines())
    assert n <= MAX_README_LINES, f'README.md has {n} lines (max ' \
        f'{MAX_README_LINES}); move details into docs/'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target, dest, anchor in _relative_links(page):
        if not dest.exists():
            broken.append(f'{target}: no file {dest.relative_to(ROOT)}')
        elif anchor and dest.suffix == '.md' and \
                anchor not in _anchors(dest):
            broken.append(f'{target}: no heading #{anchor} in {dest.name}')
    assert not broken, f'{page.name}: broken links:\n' + '\n'.join(broken)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_named_repository_paths_exist(page):
    missing = sorted({p for p in _repo_paths(page) if not (ROOT / p).exists()})
    assert not missing, f'{page.name} names paths that do not exist: ' \
        f'{missing}'


def test_every_docs_page_reachable_from_readme():
    seen, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != '.md' or not page.exists():
            continue
        seen.add(page)
        todo.extend(dest for _, dest, _ in _relative_links(page))
    missing = [p.name for p in PAGES if p.resolve() not in seen]
    assert not missing, f'docs pages no link leads to from README.md: ' \
        f'{missing}'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_no_internal_vocabulary(page):
    found = []
    for n, line in enumerate(page.read_text(encoding='utf-8').splitlines(),
                             1):
        for what, pattern in BANNED.items():
            m = pattern.search(line)
            if m:
                found.append(f'{page.name}:{n}: {what} {m.group(0)!r}: '
                             f'{line.strip()[:100]}')
    assert not found, 'user-facing text mentions project internals:\n' + \
        '\n'.join(found)


def test_checks_catch_what_they_should(tmp_path):
    """The patterns and link checks fail on the things they exist for."""
    bad = '\n'.join(['Odam-Train (issue 5)', 'run on the H200', 'a 2-core box',
                     'the ../shared folder', 'in session 3'])
    hits = [w for w, p in BANNED.items() for line in bad.splitlines()
            if p.search(line)]
    assert sorted(set(hits)) == sorted(BANNED)
    page = tmp_path / 'p.md'
    page.write_text('# Title\n[a](missing.md) [b](p.md#title) '
                    '[c](https://x.org/y.md)\n```\n[d](nothere.md)\n```\n')
    links = [(t, d.exists(), a) for t, d, a in _relative_links(page)]
    assert links == [('missing.md', False, None), ('p.md#title', True,
                                                  'title')]
    assert _anchors(page) == {'title'}
    page.write_text('see `configs/a_{nms,odam-nms}.py`, configs/b.py, '
                    '`tools/x.py`: and configs/c_*.py or <stem>/d.jpg')
    assert list(_repo_paths(page)) == ['configs/b.py', 'tools/x.py']
