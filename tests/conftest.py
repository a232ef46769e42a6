"""Shared fixtures for the whole test suite (rootdir conftest)."""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # import mmdet_odam without installing
    sys.path.insert(0, str(REPO_ROOT))
# Shared 2-core machines: one thread per process, also for subprocesses.
os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Root of the repository under test."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """``../shared`` beside the repository (``$MMDET_ODAM_SHARED``
    overrides); fails the test with the path when it is missing."""
    from mmdet_odam.utils import shared_dir as _shared_dir
    return _shared_dir()


@pytest.fixture(scope='session')
def coco_tiny_root(shared_dir) -> Path:
    """``coco_val2017_tiny80``: 80 COCO val2017 images with masks."""
    return shared_dir / 'data' / 'coco_val2017_tiny80'
