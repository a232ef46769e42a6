"""mmdet-odam: ODAM explanations, Odam-Train and Odam-NMS for MMDetection 3.x.

mmcv (compiled ops) is not in ``install_requires``: install it first, see
README (``mim install "mmcv==2.1.0"`` or ``make install``).
"""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    with open(osp.join(HERE, 'mmdet_odam', 'version.py')) as f:
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]",
                          f.read(), re.M)
    if found is None:
        raise RuntimeError('no __version__ in mmdet_odam/version.py')
    return found.group(1)


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``fname`` (comments, blanks, ``-r`` skipped)."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


setup(
    name='mmdet-odam',
    version=get_version(),
    description='ODAM instance-specific explanations, Odam-Train and '
    'Odam-NMS for MMDetection 3.x',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(include=['mmdet_odam', 'mmdet_odam.*']),
    python_requires='>=3.8',
    install_requires=parse_requirements('requirements/runtime.txt'),
    # requirements/optional.txt is not an extra: it must be installed with
    # --no-deps (see the file).
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'mim': parse_requirements('requirements/mminstall.txt'),
    },
    zip_safe=False)
