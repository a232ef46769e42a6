"""Where the repository and the shared data folder are."""
import os
from pathlib import Path

#: Environment variable that overrides :func:`shared_dir`.
SHARED_ENV = 'MMDET_ODAM_SHARED'


def repo_root() -> Path:
    """Root of the source checkout (the folder holding ``mmdet_odam/``)."""
    return Path(__file__).resolve().parents[2]


def shared_dir(must_exist: bool = True) -> Path:
    """The shared folder: ``$MMDET_ODAM_SHARED`` or ``<repo root>/../shared``.

    Args:
        must_exist (bool): Raise if the folder does not exist.

    Raises:
        FileNotFoundError: naming the path that was looked for.
    """
    env = os.environ.get(SHARED_ENV)
    path = Path(env) if env else repo_root().parent / 'shared'
    path = path.resolve()
    if must_exist and not path.is_dir():
        how = (f'${SHARED_ENV}' if env else
               f'<repo root>/../shared (set ${SHARED_ENV} to override)')
        raise FileNotFoundError(
            f'shared folder not found: {path} (from {how})')
    return path
