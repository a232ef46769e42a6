"""Distributed runs without CUDA (``--launcher pytorch`` on CPUs)."""
import datetime
import logging
import os
import sys

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` for a CPU distributed run with the gloo backend.

    mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` and its
    default DDP wrapper passes ``device_ids=[LOCAL_RANK]``; both fail
    without CUDA. When ``cfg.launcher == 'pytorch'`` and CUDA is absent this
    sets ``env_cfg.dist_cfg.backend = 'gloo'``, initialises the process
    group itself (the runner then skips ``init_dist``) and wraps the model
    in ``MMDistributedDataParallel`` with ``device_ids=None``.

    Returns:
        bool: whether the CPU set-up was applied.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if kwargs.get('timeout', None) is not None:  # as mmengine init_dist
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper.setdefault('device_ids', None)
    return True


def use_rank_zero_logger(cfg: Config) -> None:
    """Swap the config's default ``LoggerHook`` for ``RankZeroLoggerHook``
    (same options), whose end-of-test JSON only rank 0 writes."""
    logger = cfg.get('default_hooks', {}).get('logger', None)
    if logger is not None and logger.get('type') in ('LoggerHook',
                                                     'mmengine.LoggerHook'):
        logger['type'] = 'RankZeroLoggerHook'


def shutdown_distributed() -> None:
    """End a successful distributed run: wait for every rank, then leave.

    The ranks meet at a barrier (every rank has written its results) and
    exit at once with status 0, after flushing the logs. Leaving through the
    interpreter's normal shutdown lets C++ destructors run on gloo's and the
    TCP store's worker threads; when they are still joinable a rank aborts
    ("terminate called without an active exception", SIGABRT) after its work
    is done, which the launcher reports as a failed run. Not distributed:
    does nothing.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    torch_dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
