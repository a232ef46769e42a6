"""``RankZeroLoggerHook``: mmengine's ``LoggerHook`` whose end-of-test log
and ``<timestamp>.json`` are written by rank 0 only."""
from mmengine.dist import is_main_process
from mmengine.hooks import LoggerHook

from mmdet.registry import HOOKS


@HOOKS.register_module()
class RankZeroLoggerHook(LoggerHook):
    """mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the test
    metrics to ``<log_dir>/<timestamp>.json`` on every rank; in a
    distributed test the ranks write the same file at once and can leave it
    corrupted. This hook writes it on rank 0 only (the metrics are the same
    on every rank). ``tools/test.py`` and ``tools/train.py`` use it in place
    of ``LoggerHook``.
    """

    def after_test_epoch(self, runner, metrics=None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)
