"""CrowdHuman dataset with checked ``.odgt`` parsing and no cache writes."""
import os.path as osp
from typing import List, Optional

import mmcv
from mmdet.datasets import CrowdHumanDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get, load

from .odgt import load_odgt


@DATASETS.register_module()
class OdamCrowdHumanDataset(CrowdHumanDataset):
    """mmdet's :class:`CrowdHumanDataset` with clear errors on bad input.

    Same annotations and outputs as the parent, but:

    - a missing ``data_root``/``ann_file``, an empty or malformed ``.odgt``
      line, or an unreadable image raises an error naming the path/line;
    - image sizes come from ``extra_ann_file`` (``{ID: [h, w]}``, written by
      ``tools/dataset_converters/make_crowd.py`` and ``coco2crowdhuman.py``)
      when given, else from the images; nothing is written into
      ``data_root``.

    Args:
        data_root (str): root of ``ann_file`` and ``data_prefix``.
        ann_file (str): ``.odgt`` file.
        extra_ann_file (str, optional): ``id_hw`` json. Defaults to None.
    """

    def __init__(self, data_root: str, ann_file: str,
                 extra_ann_file: Optional[str] = None, **kwargs):
        self._data_root_arg = data_root
        self._extra_ann_file = extra_ann_file
        self._id_hw = None
        if not kwargs.get('lazy_init', False):
            self._load_id_hw()
        self.extra_ann_exist = self._id_hw is not None
        self.extra_anns = self._id_hw or {}
        # skip CrowdHumanDataset.__init__ (it may write into data_root)
        super(CrowdHumanDataset, self).__init__(
            data_root=data_root, ann_file=ann_file, **kwargs)

    def _load_id_hw(self) -> None:
        """Check ``data_root`` and read ``extra_ann_file`` (done when the
        data is loaded, so a ``lazy_init`` build for the metainfo alone, as
        mmdet's ``init_detector`` does, needs no data on disk)."""
        data_root, path = self._data_root_arg, self._extra_ann_file
        if data_root and not osp.isdir(data_root):
            raise FileNotFoundError(f'data_root {data_root} does not exist')
        if path is not None:
            if data_root and not osp.isabs(path):
                path = osp.join(data_root, path)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'extra_ann_file {path} does not exist')
            self._id_hw = load(path)

    def load_data_list(self) -> List[dict]:
        if self._id_hw is None:
            self._load_id_hw()  # lazily built: check and read now
        records = load_odgt(self.ann_file, backend_args=self.backend_args)
        has_hw = self._id_hw is not None
        self.extra_anns = dict(self._id_hw or {})
        self.extra_ann_exist = True  # parse_data_info reads extra_anns
        data_list = []
        for i, rec in enumerate(records, start=1):
            if has_hw and rec['ID'] not in self.extra_anns:
                raise KeyError(f'{self.ann_file}, line {i}: image ID '
                               f'{rec["ID"]!r} is not in extra_ann_file')
            if not has_hw:
                img_path = osp.join(self.data_prefix['img'],
                                    f"{rec['ID']}.jpg")
                try:
                    img = mmcv.imfrombytes(
                        get(img_path, backend_args=self.backend_args))
                except FileNotFoundError:
                    raise FileNotFoundError(
                        f'{self.ann_file}, line {i}: image {img_path} does '
                        'not exist') from None
                if img is None:
                    raise OSError(f'{self.ann_file}, line {i}: cannot '
                                  f'decode image {img_path}')
                self.extra_anns[rec['ID']] = img.shape[:2]
            data_list.append(self.parse_data_info(rec))
        return data_list
