"""``OdamRetinaHead``: mmdet ``RetinaHead`` with candidate tracking
and Odam-NMS."""
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS

from .odam_dense_head_mixin import OdamDenseHeadMixin
from .odam_train_mixin import OdamTrainDenseMixin


@MODELS.register_module()
class OdamRetinaHead(OdamTrainDenseMixin, OdamDenseHeadMixin, RetinaHead):
    """mmdet ``RetinaHead`` whose predictions carry ``level_ids``,
    ``loc_inds`` and ``cand_inds`` (see :mod:`mmdet_odam.explainers.dense`),
    that runs Odam-NMS when ``test_cfg.nms.type == 'odam_nms'`` (kept rows get
    ``odam_maps``). Odam-Train (``loss_odam``) is refused when the head is
    built: its positives are implemented for FCOS-style heads only.
    """
