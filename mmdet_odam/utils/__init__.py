"""Utilities: checkpoint loading, paths, config checks, CPU distributed,
atomic file writes."""
from .atomic import (atomic_path, imwrite_atomic, savez_atomic,
                     write_bytes_atomic, write_text_atomic)
from .checkpoint import (SAFE_GLOBALS, UnsafeCheckpointError,
                         load_from_local, register_checkpoint_loader,
                         register_checkpoint_safe_globals)
from .config import check_data_roots, merge_cfg_options
from .dist import (setup_cpu_distributed, shutdown_distributed,
                   use_rank_zero_logger)
from .paths import repo_root, shared_dir

register_checkpoint_loader()

__all__ = [
    'SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_from_local',
    'register_checkpoint_loader', 'register_checkpoint_safe_globals',
    'check_data_roots', 'merge_cfg_options', 'setup_cpu_distributed',
    'shutdown_distributed', 'use_rank_zero_logger',
    'repo_root', 'shared_dir', 'atomic_path', 'imwrite_atomic',
    'savez_atomic', 'write_bytes_atomic', 'write_text_atomic'
]
