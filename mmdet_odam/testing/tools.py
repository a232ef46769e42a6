"""Import a script of the repository's ``tools/`` as a module."""
import importlib.util
from types import ModuleType

from mmdet_odam.utils import repo_root


def load_tool(relpath: str) -> ModuleType:
    """The module of ``tools/<relpath>`` (e.g.
    ``'analysis_tools/sweep_odam_nms.py'``), executed once per call."""
    path = repo_root() / 'tools' / relpath
    if not path.is_file():
        raise FileNotFoundError(f'no tool {path}')
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
