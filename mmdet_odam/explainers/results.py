"""The result of explaining one image."""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor


@dataclass
class Explanation:
    """Explanations of the detections (or given boxes) of one image.

    Attributes:
        bboxes (Tensor): (K, 4) xyxy in original-image pixels.
        scores (Tensor): (K,) detection scores.
        labels (Tensor): (K,) class indices.
        candidate_inds (Tensor): (K,) index of the candidate that produced each
            row (dense heads: pre-NMS candidate index; two-stage: RoI index;
            generic explainer: index of the reported detection).
        maps (dict[str, Tensor]): target name -> (K, H, W) in [0, 1], H, W =
            ``ori_shape``.
        img_path (str, optional): image file, if known.
        ori_shape (tuple[int, int]): original image (H, W).
        method (str): ``odam``, ``gradcam``, ``gradcampp`` or ``drise``.
        layer (str): the explained feature layer (``'fpn_level'`` = the FPN
            level that produced each detection).
        level_ids (Tensor, optional): (K,) FPN level of each row (dense heads).
    """
    bboxes: Tensor
    scores: Tensor
    labels: Tensor
    candidate_inds: Tensor
    maps: Dict[str, Tensor]
    img_path: Optional[str] = None
    ori_shape: Tuple[int, int] = (0, 0)
    method: str = 'odam'
    layer: str = 'fpn_level'
    level_ids: Optional[Tensor] = None
    metainfo: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.bboxes.shape[0])

    @classmethod
    def empty(cls, targets, ori_shape, **kw) -> 'Explanation':
        """An explanation with no rows (an image without detections)."""
        h, w = int(ori_shape[0]), int(ori_shape[1])
        return cls(
            bboxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            labels=torch.zeros(0, dtype=torch.long),
            candidate_inds=torch.zeros(0, dtype=torch.long),
            maps={str(getattr(t, 'value', t)): torch.zeros(0, h, w)
                  for t in targets},
            ori_shape=(h, w),
            **kw)

    def to_numpy(self) -> Dict[str, np.ndarray]:
        """``boxes``, ``scores`` (float32), ``labels``, ``candidate_inds``
        (int64) and ``maps_<target>`` (float32) as numpy arrays; the
        ``<stem>.npz`` files hold these keys (maps in float16 by default)
        plus metadata, see
        :func:`mmdet_odam.visualization.writer.explanation_arrays`."""
        out = dict(
            boxes=self.bboxes.detach().cpu().float().numpy(),
            scores=self.scores.detach().cpu().float().numpy(),
            labels=self.labels.detach().cpu().long().numpy(),
            candidate_inds=self.candidate_inds.detach().cpu().long().numpy())
        for name, m in self.maps.items():
            out[f'maps_{name}'] = m.detach().cpu().float().numpy()
        return out
