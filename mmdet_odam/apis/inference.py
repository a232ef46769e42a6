"""High-level API: build a detector, explain an image."""
import copy
import os.path as osp
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config

from ..explainers.builder import build_explainer
from ..explainers.results import Explanation


def init_explainer(config: Union[str, Path, Config, dict],
                   checkpoint: Optional[str] = None, device: str = 'cpu',
                   cfg_options: Optional[dict] = None):
    """Build a detector from a config (+ checkpoint) ready to be explained.

    Same as :func:`mmdet.apis.init_detector`; checkpoints are loaded with
    ``torch.load(weights_only=True)`` (see :mod:`mmdet_odam.utils`).

    Args:
        config: config file, :class:`Config` or dict.
        checkpoint (str, optional): checkpoint file.
        device (str): ``'cpu'`` or ``'cuda:0'``...
        cfg_options (dict, optional): overrides merged into the config.

    Returns:
        nn.Module: the detector in eval mode, with ``model.cfg`` set.
    """
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules
    register_all_modules()
    if isinstance(config, (str, Path)):
        if not osp.isfile(str(config)):
            raise FileNotFoundError(f'Config file not found: {config}')
        config = Config.fromfile(str(config))
    elif isinstance(config, dict) and not isinstance(config, Config):
        config = Config(copy.deepcopy(config))
    if checkpoint is not None and not osp.isfile(str(checkpoint)):
        raise FileNotFoundError(f'Checkpoint file not found: {checkpoint}')
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_detector(config, checkpoint, device=device,
                              cfg_options=cfg_options)
    model.eval()
    return model


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as an (H, W, 3) BGR uint8 array.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded as an image.
    """
    import mmcv
    path = str(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'Image file not found: {path}')
    try:
        img = mmcv.imread(path)
    except Exception as e:  # noqa: BLE001  (some decoders raise)
        raise ValueError(f'Cannot read image {path}: {e}') from e
    if img is None or img.size == 0:
        raise ValueError(f'Cannot read image {path} (not an image or '
                         'corrupt)')
    return img


def _load_input(img):
    """Check ``img`` (path or HxWx3 BGR uint8 array); return it ready for
    the pipeline."""
    if isinstance(img, (str, Path)):
        read_image(img)  # clear error before the pipeline reads it
        return str(img)
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
            raise ValueError(f'Image array must be HxWx3 (BGR), got shape '
                             f'{img.shape}')
        return img
    raise TypeError(f'img must be a file path or a numpy array, got '
                    f'{type(img).__name__}')


def prepare_inputs(model, img):
    """Run the model's test pipeline + data preprocessor on one image.

    Returns:
        tuple: ``inputs`` (1, 3, H, W) and ``data_samples`` (list of one).
    """
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ValueError('model has no `cfg` (test pipeline); build it with '
                         'init_explainer / mmdet.apis.init_detector')
    img = _load_input(img)
    pipeline = copy.deepcopy(get_test_pipeline_cfg(cfg))
    pipeline = [t for t in pipeline
                if 'LoadAnnotations' not in str(t.get('type', ''))]
    if isinstance(img, np.ndarray):
        pipeline[0].type = 'mmdet.LoadImageFromNDArray'
        data = dict(img=img, img_id=0)
    else:
        data = dict(img_path=img, img_id=0)
    data = Compose(pipeline)(data)
    data = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        data = model.data_preprocessor(data, False)
    return data['inputs'], data['data_samples']


def _path_kw(path, kw: dict) -> dict:
    """Explainer options with ``path`` (``exact=`` given alone keeps its
    older meaning)."""
    if 'exact' in kw and path == 'auto':
        return kw
    return dict(kw, path=path)


def explain_image(model, img, targets: Sequence[str] = ('cls', ),
                  method: str = 'odam', layer: Optional[str] = None,
                  smoothing: str = 'gaussian', grad_mode: str = 'pos_relu',
                  score_thr: float = 0.3, topk: int = 100, boxes=None,
                  labels=None, path: str = 'auto',
                  **explainer_kw) -> Explanation:
    """Explain the detections (or given boxes) of one image.

    Args:
        model: a detector built by :func:`init_explainer` (or
            ``init_detector``; needs ``model.cfg`` for the test pipeline).
        img (str | ndarray): image path or HxWx3 BGR array.
        targets: any of ``cls``, ``left``, ``top``, ``right``, ``bottom``,
            ``combined``.
        method (str): ``odam`` (default) or a registered method
            (``gradcam``, ``gradcampp``, ``drise``).
        layer (str, optional): explained layer (default: the FPN level of
            each detection / RoI features); ``'neck'`` or any module name.
        smoothing (str): ``gaussian`` or ``none``.
        grad_mode (str): ``pos_relu``, ``neg_relu``, ``pos_norelu``, ``abs``.
        score_thr (float): minimum detection score in [0, 1].
        topk (int): at most this many detections.
        boxes (array-like, optional): (K, 4) xyxy boxes in original pixels to
            explain instead of the detections.
        labels (array-like, optional): (K,) class of each box.
        path (str): ``auto`` (default), ``exact`` or ``fast`` (see
            :class:`~mmdet_odam.explainers.targets.ExplainPath`;
            :func:`explain_support` says which path each target takes).
        **explainer_kw: more explainer options (``chunk_size``,
            ``verify``; ``exact`` is the older spelling of ``path``).

    Returns:
        Explanation: maps (K, H, W) per target at the original resolution.
    """
    explainer = build_explainer(model, method=method, targets=targets,
                                layer=layer, smoothing=smoothing,
                                grad_mode=grad_mode,
                                **_path_kw(path, explainer_kw))
    inputs, samples = prepare_inputs(model, img)
    if boxes is not None:
        boxes = [torch.as_tensor(np.asarray(boxes, dtype=np.float32))
                 .reshape(-1, 4)]
        if labels is not None:
            labels = [torch.as_tensor(np.asarray(labels, dtype=np.int64))
                      .reshape(-1)]
    elif labels is not None:
        raise ValueError('labels are only used together with boxes')
    exp = explainer.explain(inputs, samples, score_thr=score_thr, topk=topk,
                            boxes=boxes, labels=labels)[0]
    if isinstance(img, (str, Path)):
        exp.img_path = str(img)
    return exp
