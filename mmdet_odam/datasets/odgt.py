"""Read, check and write CrowdHuman ``.odgt`` files (one JSON record a line).

A record is ``{"ID": str, "gtboxes": [{"tag": "person" | "mask",
"fbox": [x, y, w, h], "vbox": [...], "hbox": [...], "extra": {"ignore": 0|1},
...}, ...]}``, the format of CrowdHuman and of mmdet's ``CrowdHumanDataset``
and ``CrowdHumanMetric``.
"""
import json
import os
import os.path as osp
import tempfile
from typing import Iterable, List

from mmengine.fileio import get_text

BOX_KEYS = ('fbox', 'vbox', 'hbox')


class OdgtError(ValueError):
    """A malformed ``.odgt`` file; the message names the file and line."""


def check_odgt_record(rec, where: str) -> None:
    """Raise :class:`OdgtError` (prefixed with ``where``) if ``rec`` is not a
    record that ``CrowdHumanDataset`` and ``CrowdHumanMetric`` can read."""
    if not isinstance(rec, dict):
        raise OdgtError(f'{where}: expected a JSON object, got '
                        f'{type(rec).__name__}')
    if not isinstance(rec.get('ID'), str) or not rec['ID']:
        raise OdgtError(f'{where}: missing or empty string key "ID"')
    boxes = rec.get('gtboxes')
    if not isinstance(boxes, list):
        raise OdgtError(f'{where}: key "gtboxes" must be a list')
    for j, box in enumerate(boxes):
        if not isinstance(box, dict) or 'tag' not in box:
            raise OdgtError(f'{where}: gtboxes[{j}] has no "tag"')
        for key in BOX_KEYS:
            b = box.get(key)
            if (not isinstance(b, list) or len(b) != 4 or not all(
                    isinstance(v, (int, float)) for v in b)):
                raise OdgtError(f'{where}: gtboxes[{j}]["{key}"] must be '
                                f'[x, y, w, h], got {b!r}')
            if b[2] < 0 or b[3] < 0:
                raise OdgtError(f'{where}: gtboxes[{j}]["{key}"] has a '
                                f'negative width or height: {b}')


def parse_odgt(text: str, path: str) -> List[dict]:
    """Parse the text of an ``.odgt`` file; errors name ``path:line``."""
    lines = text.rstrip('\n').split('\n') if text.strip() else []
    if not lines:
        raise OdgtError(f'{path}: the file is empty')
    records = []
    for i, line in enumerate(lines, start=1):
        where = f'{path}, line {i}'
        if not line.strip():
            raise OdgtError(f'{where}: empty line')
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise OdgtError(f'{where}: malformed JSON ({e.msg} at column '
                            f'{e.colno})') from None
        check_odgt_record(rec, where)
        records.append(rec)
    return records


def load_odgt(path: str, backend_args=None) -> List[dict]:
    """Load and check an ``.odgt`` file.

    Raises:
        FileNotFoundError: the file does not exist.
        OdgtError: an empty or malformed line (message names file and line).
    """
    if '://' not in str(path) and not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} does not exist')
    return parse_odgt(get_text(path, backend_args=backend_args), str(path))


def dump_odgt(records: Iterable[dict], path: str) -> None:
    """Write records to ``path`` atomically (temporary file + rename)."""
    lines = []
    for i, rec in enumerate(records, start=1):
        check_odgt_record(rec, f'record {i}')
        lines.append(json.dumps(rec, separators=(',', ':')))
    write_text_atomic(path, '\n'.join(lines) + '\n')


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename."""
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + osp.basename(path))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
