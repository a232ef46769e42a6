"""tools/demo.py's quiet steps: the tool's output goes to a log file, the
terminal gets a progress bar and one line; a failing step names its log and
shows its last lines."""
import sys
from pathlib import Path

import pytest

from mmdet_odam.testing import load_tool


@pytest.fixture(scope='module')
def demo():
    return load_tool('demo.py')


def test_count_test_iters_reads_the_last_test_iteration(demo, tmp_path):
    log = tmp_path / 'test.log'
    count = demo.count_test_iters(str(log))
    assert count() == 0  # not written yet
    log.write_text('12/03 10:00:00 - mmengine - INFO - Epoch(test) [ 1/12]  '
                   'eta: 0:00:05\nsome line\n'
                   '12/03 10:00:01 - mmengine - INFO - Epoch(test) [10/12]  '
                   'eta: 0:00:01\n')
    assert count() == 10
    cmd = demo.test_cmd('py', 'c.py', 'k.pth', 'w')
    assert cmd[-2:] == ['--cfg-options', 'default_hooks.logger.interval=1']


def test_run_step_quiet_with_progress(demo, tmp_path, capsys):
    """A step printing 200 lines: they land in the log, the terminal gets
    the title, the bar (3/3) and the summary line."""
    out = tmp_path / 'files'
    out.mkdir()
    script = ('import pathlib, sys\n'
              'for i in range(200): print("runner log line", i)\n'
              f'for i in range(3): pathlib.Path({str(out)!r}, f"{{i}}.npz")'
              '.write_text("x")\n'
              'print("to stderr", file=sys.stderr)\n')
    log = tmp_path / 'step.log'
    took = demo.run_step('[1/2]', 'explain', [sys.executable, '-c', script],
                         str(log), 3, demo.count_files(str(out / '*.npz')))
    assert took >= 0
    text = capsys.readouterr().out
    assert text.count('\n') <= 3
    assert '[1/2] explain' in text and '3/3' in text and 'done in' in text
    assert str(Path(log).name) in text
    logged = log.read_text()
    assert 'runner log line 199' in logged and 'to stderr' in logged
    assert 'runner log line' not in text


def test_run_step_failure_names_the_log(demo, tmp_path):
    log = tmp_path / 'bad.log'
    with pytest.raises(demo.DemoError) as e:
        demo.run_step('[2/2]', 'test', [
            sys.executable, '-c',
            'print("first"); print("the reason"); raise SystemExit(3)'
        ], str(log), 1, lambda: 0)
    msg = str(e.value)
    assert 'exit code 3' in msg and 'bad.log' in msg and 'the reason' in msg
