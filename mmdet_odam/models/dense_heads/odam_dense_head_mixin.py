"""Candidate tracking, Odam-NMS and the Odam-Train option for mmdet dense
heads: the mixin of ``OdamFCOSHead``, ``OdamRetinaHead`` and
``OdamATSSHead``."""
from mmdet.registry import MODELS

from ...adapters.support import equivalent_override
from ...explainers.dense import tracked_predict_by_feat
from ...explainers.reversed_head import forward_recording, reversed_head_spec
from ...nms.odam_nms import check_test_cfg_nms


class OdamDenseHeadMixin:
    """Candidate tracking (and Odam-NMS) for mmdet dense heads.

    ``predict`` results carry ``level_ids``, ``loc_inds``, ``cand_inds``
    (and ``odam_maps`` with ``test_cfg.nms.type='odam_nms'``). The head
    accepts ``loss_odam`` (an Odam-Train loss config or None) and checks an
    Odam-NMS ``test_cfg`` when it is built.
    """

    #: Whether Odam-Train positives are implemented for this head.
    odam_train_supported = False

    def __init__(self, *args, loss_odam=None, **kwargs):
        if loss_odam and not self.odam_train_supported:
            raise ValueError(
                f'{type(self).__name__} does not support Odam-Train '
                '(loss_odam): its positives are implemented for '
                'OdamFCOSHead (one-stage) and OdamStandardRoIHead '
                '(two-stage); remove loss_odam or use one of those heads')
        super().__init__(*args, **kwargs)
        self.loss_odam = MODELS.build(loss_odam) if loss_odam else None
        check_test_cfg_nms(self.test_cfg)  # Odam-NMS cfg errors at build

    @equivalent_override
    def predict(self, x, batch_data_samples, rescale: bool = False):
        """``BaseDenseHead.predict``; with Odam-NMS on a head the reversed
        head supports, the forward also records what the candidate maps
        need (kept on the head for this call only)."""
        nms = (self.test_cfg or {}).get('nms') or {}
        towers = reversed_head_spec(self) \
            if nms.get('type') == 'odam_nms' else None
        self._odam_feats = x
        try:
            if towers is None:
                return super().predict(x, batch_data_samples,
                                       rescale=rescale)
            outs, self._odam_record = forward_recording(self, x, towers)
            return self.predict_by_feat(
                *outs, batch_img_metas=[s.metainfo
                                        for s in batch_data_samples],
                rescale=rescale)
        finally:
            self._odam_feats = self._odam_record = None

    @equivalent_override
    def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None,
                        batch_img_metas=None, cfg=None, rescale=False,
                        with_nms=True):
        return tracked_predict_by_feat(
            self, cls_scores, bbox_preds, score_factors, batch_img_metas,
            cfg, rescale, with_nms, getattr(self, '_odam_feats', None),
            getattr(self, '_odam_record', None))
