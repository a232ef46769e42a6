"""``OdamStandardRoIHead``: mmdet ``StandardRoIHead`` with candidate
tracking (``roi_inds``), Odam-NMS and Odam-Train."""
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS

from ...adapters.support import equivalent_override
from ...explainers.two_stage import predict_bbox_with_inds
from ...nms.odam_nms import check_test_cfg_nms
from .odam_train_mixin import OdamTrainRoIMixin


class OdamRoIPredictMixin:
    """``predict_bbox`` whose results carry ``roi_inds`` (index of the RoI
    in the image's proposal list) and that runs Odam-NMS on ODAM ``cls``
    maps of all (RoI, class) candidates above ``score_thr`` when
    ``test_cfg.nms.type == 'odam_nms'`` (kept rows get ``odam_maps``,
    (K, H_o, W_o) on the Odam-NMS grid)."""

    @equivalent_override
    def predict_bbox(self, x, batch_img_metas, rpn_results_list,
                     rcnn_test_cfg, rescale: bool = False):
        return predict_bbox_with_inds(self, x, batch_img_metas,
                                      rpn_results_list, rcnn_test_cfg,
                                      rescale)


@MODELS.register_module()
class OdamStandardRoIHead(OdamTrainRoIMixin, OdamRoIPredictMixin,
                          StandardRoIHead):
    """mmdet ``StandardRoIHead`` + candidate tracking + Odam-NMS, and
    Odam-Train when built with ``loss_odam=dict(type='OdamTrainLoss', ...)``
    (None: the plain detector's losses)."""

    def __init__(self, *args, loss_odam=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_odam = MODELS.build(loss_odam) if loss_odam else None
        check_test_cfg_nms(self.test_cfg)  # Odam-NMS cfg errors at build
