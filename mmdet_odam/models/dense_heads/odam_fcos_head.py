"""``OdamFCOSHead``: mmdet ``FCOSHead`` with candidate tracking,
Odam-NMS and Odam-Train."""
from mmdet.models.dense_heads import FCOSHead
from mmdet.registry import MODELS

from .odam_dense_head_mixin import OdamDenseHeadMixin
from .odam_train_mixin import OdamTrainDenseMixin


@MODELS.register_module()
class OdamFCOSHead(OdamTrainDenseMixin, OdamDenseHeadMixin, FCOSHead):
    """mmdet ``FCOSHead`` whose predictions carry ``level_ids``,
    ``loc_inds`` and ``cand_inds`` (see :mod:`mmdet_odam.explainers.dense`),
    that runs Odam-NMS when ``test_cfg.nms.type == 'odam_nms'`` (kept rows get
    ``odam_maps``) and accepts ``loss_odam`` (Odam-Train loss config or None).
    """
    odam_train_supported = True
