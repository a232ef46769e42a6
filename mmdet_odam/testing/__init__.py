"""Helpers for tests, benchmarks and tools: MMDetection's zoo, shrunk."""
from .precision import float64_nms
from .tools import load_tool
from .zoo import (MAX_PER_IMG, ZOO, ZooEntry, build_zoo_model, get_entry,
                  mmdet_configs_dir, select, zoo_config, zoo_image,
                  zoo_inputs)

__all__ = ['float64_nms', 'load_tool', 'MAX_PER_IMG', 'ZOO', 'ZooEntry',
           'build_zoo_model', 'get_entry', 'mmdet_configs_dir', 'select',
           'zoo_config', 'zoo_image', 'zoo_inputs']
