"""MMDetection's own model zoo, shrunk to run on a CPU in seconds.

Every :class:`ZooEntry` names a config file that ships inside the installed
mmdet package (``mmdet/.mim/configs``) and the overrides that make it small:
a thin backbone (ResNet-18 with 16 base channels, or a narrow CSP /
MobileNet), 32-channel necks and heads, one transformer layer with 32-dim
embeddings and 20 queries. Every build also drops pretrained weights
(nothing downloads), turns ``SyncBN`` into ``BN``, sets the test
``score_thr`` to 0 and ``max_per_img`` to :data:`MAX_PER_IMG`, and resizes
the test pipeline to a small input (:data:`INPUT_SCALE`). Weights are
random (seeded).

Used by the contract test over every family, ``benchmarks/bench_zoo.py``
and ``tools/analysis_tools/supported_detectors.py``::

    from mmdet_odam.testing import ZOO, build_zoo_model, zoo_inputs
    model = build_zoo_model(ZOO['RetinaNet'])
    inputs, data_samples = zoo_inputs(model)
"""
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, ConfigDict

#: Test-time ``max_per_img`` of every zoo model (detections per image).
MAX_PER_IMG = 20
#: Proposals kept by RPN heads at test time.
RPN_PROPOSALS = 100
#: Test pipeline resize scale, mmcv's (w, h).
INPUT_SCALE = (160, 128)
#: The COCO photograph used by :func:`zoo_image` and its size after the
#: first downscale (it becomes the "original image"), (w, h).
COCO_IMAGE = '000000025603.jpg'
ORIGINAL_SIZE = (200, 150)


@dataclass(frozen=True)
class ZooEntry:
    """One detector family built from an mmdet config.

    Attributes:
        name (str): family name (``'RetinaNet'``).
        config (str): config path relative to mmdet's ``.mim/configs``.
        overrides (dict): dotted keys under ``model`` (``'neck.in_channels'``)
            -> value, merged like ``--cfg-options``.
        everywhere (dict): key -> value set in every dict of the model config
            that has the key (e.g. ``embed_dims`` of all attention layers);
            applied before ``overrides``.
        edit (callable, optional): change of the whole config the family
            needs to build and run here (``edit(cfg)``), applied first.
        shrink_edit (callable, optional): structural shrinking of the whole
            config (e.g. fewer cascade stages), applied after ``edit``.
        input_scale (tuple): test resize scale (w, h).
        float64 (bool): the family runs in float64 (all its ops have double
            kernels on the CPU).
        init_gain (float, optional): re-initialise every conv / linear
            weight from N(0, gain^2 / fan_in) (seeded) when PyTorch's default
            initialisation saturates or ties the scores of this family.
        init_modules (tuple[str]): submodules whose mmdet ``init_weights``
            runs after the build (e.g. the learned proposal boxes of a
            Sparse R-CNN, which are not boxes before it).
        post_build (callable, optional): ``post_build(model)`` after the
            build: works around an mmdet bug, or moves random weights to
            where a trained head starts (so that mmdet keeps boxes).
        notes (str): how the family was shrunk, for tables.
    """
    name: str
    config: str
    overrides: Dict = field(default_factory=dict)
    everywhere: Dict = field(default_factory=dict)
    edit: Optional[Callable] = None
    shrink_edit: Optional[Callable] = None
    input_scale: Tuple[int, int] = INPUT_SCALE
    float64: bool = True
    init_gain: Optional[float] = None
    init_modules: Tuple[str, ...] = ()
    post_build: Optional[Callable] = None
    notes: str = ''


# -- building blocks of the overrides ------------------------------------
def resnet18(out_indices=(0, 1, 2, 3), base=16) -> Dict:
    """ResNet-18 with ``base`` stem / first-stage channels."""
    return {'backbone.depth': 18, 'backbone.base_channels': base,
            'backbone.out_indices': tuple(out_indices)}


def resnet18_channels(out_indices=(0, 1, 2, 3), base=16):
    """Output channels of :func:`resnet18` per ``out_indices``."""
    return [base * 2**i for i in out_indices]


def fpn(width=32, prefix='neck', out_indices=(0, 1, 2, 3)) -> Dict:
    return {f'{prefix}.in_channels': resnet18_channels(out_indices),
            f'{prefix}.out_channels': width}


def dense_head(width=32, convs=2, prefix='bbox_head') -> Dict:
    return {f'{prefix}.in_channels': width,
            f'{prefix}.feat_channels': width,
            f'{prefix}.stacked_convs': convs}


def r18_fpn_dense(width=32, convs=2, **extra) -> Dict:
    """ResNet-18 + FPN + one dense head, all ``width`` channels wide."""
    return {**resnet18(), **fpn(width), **dense_head(width, convs), **extra}


def rpn_roi(width=32, fc=64, mask=False) -> Dict:
    """RPN + standard RoI head (optionally with a mask head), narrow."""
    out = {'rpn_head.in_channels': width, 'rpn_head.feat_channels': width,
           'roi_head.bbox_roi_extractor.out_channels': width,
           'roi_head.bbox_head.in_channels': width,
           'roi_head.bbox_head.fc_out_channels': fc}
    if mask:
        out.update({'roi_head.mask_roi_extractor.out_channels': width,
                    'roi_head.mask_head.in_channels': width,
                    'roi_head.mask_head.conv_out_channels': width,
                    'roi_head.mask_head.num_convs': 2})
    return out


#: One 32-dim transformer layer with a 64-wide FFN.
TRANSFORMER = {'embed_dims': 32, 'feedforward_channels': 64, 'num_feats': 16,
               'num_layers': 1}


def detr_like(out_indices=(3, ), queries=20, width=32) -> Dict:
    return {**resnet18(out_indices), **fpn(width, out_indices=out_indices),
            'num_queries': queries, 'bbox_head.embed_dims': width}


def cascade_heads(width=32, fc=64, stages=3) -> Dict:
    out = {'rpn_head.in_channels': width, 'rpn_head.feat_channels': width,
           'roi_head.bbox_roi_extractor.out_channels': width}
    for i in range(stages):
        out[f'roi_head.bbox_head.{i}.in_channels'] = width
        out[f'roi_head.bbox_head.{i}.fc_out_channels'] = fc
    return out


def plain_preprocessor(cfg):
    """BoxInst's preprocessor only adds training targets (and needs
    scikit-image): use mmdet's plain one with the same normalisation."""
    pre = cfg.model.data_preprocessor
    cfg.model.data_preprocessor = ConfigDict(
        type='DetDataPreprocessor', mean=pre.mean, std=pre.std,
        bgr_to_rgb=pre.bgr_to_rgb, pad_size_divisor=pre.pad_size_divisor)


def ssd_loss_cls(model):
    """mmdet 3.3 ``BaseDenseHead._predict_by_feat_single`` reads
    ``self.loss_cls``, which ``SSDHead`` never builds: give it ``None``."""
    model.bbox_head.loss_cls = None


def one_stride_distances(model):
    """RTMDet's tiny config decodes raw distances (no ``exp``): from random
    biases all four sides share a sign per level, so at mmdet's own widths
    every box has a negative width and mmdet drops them all. Start every
    distance at one stride (bias 1), where a trained head's boxes start."""
    with torch.no_grad():
        for conv in model.bbox_head.rtm_reg:
            conv.bias.fill_(1.0)


def damped_box_deltas(model, gain: float = 0.3):
    """QueryInst: at random weights the box deltas of its stages compound
    and carry every full-size box out of the image, where mmdet's mask
    paste gets an empty pixel range. Scale each stage's box regressor by
    ``gain`` so the boxes stay on the image, as a trained model's do."""
    with torch.no_grad():
        for head in model.roi_head.bbox_head:
            head.fc_reg.weight.mul_(gain)
            head.fc_reg.bias.mul_(gain)


def keep_stages(n: int, mask: bool = False) -> Callable:
    """Edit keeping the first ``n`` stages of a cascade / sparse RoI head."""
    def edit(cfg):
        roi = cfg.model.roi_head
        roi.num_stages = n
        roi.stage_loss_weights = list(roi.stage_loss_weights)[:n]
        roi.bbox_head = list(roi.bbox_head)[:n]
        if mask:
            roi.mask_head = list(roi.mask_head)[:n]
    return edit


def sparse_head(width=32, ffn=64) -> Dict:
    """Every key of Sparse R-CNN / QueryInst's DII / dynamic mask heads."""
    return {'in_channels': width, 'out_channels': width,
            'proposal_feature_channel': width, 'feedforward_channels': ffn,
            'conv_out_channels': width, 'num_convs': 1}


def ld_teacher(cfg):
    """LD: the teacher is the zoo's GFL, built from its config (no
    checkpoint)."""
    cfg.model.teacher_ckpt = None
    teacher = _load_config(ZOO['GFL'])
    cfg.model.teacher_config = ConfigDict(model=teacher.model)


_ZOO = [
    # ---- dense single-stage heads ---------------------------------------
    ZooEntry('RetinaNet', 'retinanet/retinanet_r50_fpn_1x_coco.py',
             r18_fpn_dense()),
    ZooEntry('FCOS', 'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
             r18_fpn_dense()),
    ZooEntry('ATSS', 'atss/atss_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('GFL', 'gfl/gfl_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('LD', 'ld/ld_r18-gflv1-r101_fpn_1x_coco.py', r18_fpn_dense(),
             edit=ld_teacher, notes='teacher: the zoo GFL, no checkpoint'),
    ZooEntry('DDOD', 'ddod/ddod_r50_fpn_1x_coco.py',
             r18_fpn_dense(**{'neck.num_outs': 3,
                              'bbox_head.anchor_generator.strides':
                              [8, 16, 32]}),
             notes='3 FPN levels (its DCN needs >= 3x3 maps)'),
    ZooEntry('TOOD', 'tood/tood_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('VFNet', 'vfnet/vfnet_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('PAA', 'paa/paa_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('FSAF', 'fsaf/fsaf_r50_fpn_1x_coco.py', r18_fpn_dense()),
    ZooEntry('FoveaBox', 'foveabox/fovea_r50_fpn_4xb4-1x_coco.py',
             r18_fpn_dense()),
    ZooEntry('AutoAssign', 'autoassign/autoassign_r50-caffe_fpn_1x_coco.py',
             r18_fpn_dense()),
    ZooEntry('RepPoints', 'reppoints/'
             'reppoints-moment_r50_fpn-gn_head-gn_1x_coco.py',
             r18_fpn_dense(**{'bbox_head.point_feat_channels': 32})),
    ZooEntry('CenterNet', 'centernet/centernet_r18_8xb16-crop512-140e_coco.py',
             {**resnet18((3, )), 'neck.in_channels': 128,
              'neck.num_deconv_filters': (32, 32, 32),
              'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32,
              'test_cfg.topk': MAX_PER_IMG},
             init_gain=1.0),
    ZooEntry('YOLOv3', 'yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py',
             {'backbone.widen_factor': 0.25,
              'neck.in_channels': [80, 24, 8],
              'neck.out_channels': [32, 32, 32],
              'bbox_head.in_channels': [32, 32, 32],
              'bbox_head.out_channels': [32, 32, 32]},
             init_gain=1.0, notes='MobileNetV2 x0.25'),
    ZooEntry('YOLOX', 'yolox/yolox_tiny_8xb8-300e_coco.py',
             {'backbone.widen_factor': 0.125, 'neck.in_channels': [32, 64,
                                                                  128],
              'neck.out_channels': 32, 'neck.num_csp_blocks': 1,
              'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32},
             init_gain=1.0, notes='CSPDarknet x0.125'),
    ZooEntry('RTMDet', 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
             {'backbone.widen_factor': 0.125, 'neck.in_channels': [32, 64,
                                                                  128],
              'neck.out_channels': 32, 'neck.num_csp_blocks': 1,
              'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32},
             init_gain=1.4, post_build=one_stride_distances,
             notes='CSPNeXt x0.125'),
    ZooEntry('RTMDet-Ins', 'rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py',
             {'backbone.widen_factor': 0.125, 'neck.in_channels': [32, 64,
                                                                  128],
              'neck.out_channels': 32, 'neck.num_csp_blocks': 1,
              'bbox_head.in_channels': 32, 'bbox_head.feat_channels': 32},
             notes='CSPNeXt x0.125'),
    ZooEntry('SSDLite', 'ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
             {'backbone.widen_factor': 0.25,
              'neck.in_channels': (24, 1280),
              'neck.out_channels': (24, 1280, 64, 32, 32, 16),
              'bbox_head.in_channels': (24, 1280, 64, 32, 32, 16)},
             input_scale=(320, 320), post_build=ssd_loss_cls, init_gain=1.4,
             notes='MobileNetV2 x0.25, 320x320'),
    ZooEntry('CondInst', 'condinst/condinst_r50_fpn_ms-poly-90k_coco_'
             'instance.py',
             r18_fpn_dense(**{'mask_head.mask_feature_head.in_channels': 32,
                              'mask_head.mask_feature_head.feat_channels': 32,
                              'mask_head.mask_feature_head.num_stacked_convs':
                              2})),
    ZooEntry('BoxInst', 'boxinst/boxinst_r50_fpn_ms-90k_coco.py',
             r18_fpn_dense(**{'mask_head.mask_feature_head.in_channels': 32,
                              'mask_head.mask_feature_head.feat_channels': 32,
                              'mask_head.mask_feature_head.num_stacked_convs':
                              2}),
             edit=plain_preprocessor,
             notes='plain DetDataPreprocessor (same normalisation)'),
    # ---- two-stage -------------------------------------------------------
    ZooEntry('Faster R-CNN', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(), **rpn_roi()}),
    ZooEntry('Mask R-CNN', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(), **rpn_roi(mask=True)}, float64=False,
             notes='float32 oracle: mmdet pastes masks in float32 only'),
    ZooEntry('Cascade R-CNN', 'cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(), **cascade_heads()},
             notes='3 stages kept'),
    ZooEntry('Libra R-CNN', 'libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(prefix='neck.0'), 'neck.1.in_channels': 32,
              **rpn_roi()}),
    ZooEntry('Sparse R-CNN', 'sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(), 'rpn_head.num_proposals': 20},
             everywhere=sparse_head(), shrink_edit=keep_stages(2),
             init_modules=('rpn_head', ), notes='2 of 6 stages, 20 proposals'),
    ZooEntry('QueryInst', 'queryinst/queryinst_r50_fpn_1x_coco.py',
             {**resnet18(), **fpn(), 'rpn_head.num_proposals': 20},
             everywhere=sparse_head(),
             shrink_edit=keep_stages(2, mask=True),
             init_modules=('rpn_head', ), post_build=damped_box_deltas,
             notes='2 of 6 stages, 20 proposals'),
    # ---- DETR family -----------------------------------------------------
    ZooEntry('DETR', 'detr/detr_r50_8xb2-150e_coco.py', detr_like(),
             everywhere=TRANSFORMER),
    ZooEntry('Conditional DETR', 'conditional_detr/'
             'conditional-detr_r50_8xb2-50e_coco.py', detr_like(width=256),
             everywhere={**TRANSFORMER, 'embed_dims': 256, 'num_feats': 128},
             notes='256-dim (its decoder hard-codes 128 position features)'),
    ZooEntry('DAB-DETR', 'dab_detr/dab-detr_r50_8xb2-50e_coco.py',
             detr_like(), everywhere=TRANSFORMER),
    ZooEntry('Deformable DETR', 'deformable_detr/'
             'deformable-detr_r50_16xb2-50e_coco.py', detr_like((1, 2, 3)),
             everywhere=TRANSFORMER),
    ZooEntry('DINO', 'dino/dino-4scale_r50_8xb2-12e_coco.py',
             detr_like((1, 2, 3), width=256),
             everywhere={**TRANSFORMER, 'embed_dims': 256, 'num_feats': 128},
             notes='256-dim (its decoder hard-codes 128 position features)'),
]

#: name -> entry, in a stable order (dense, two-stage, DETR family).
ZOO: Dict[str, ZooEntry] = {e.name: e for e in _ZOO}


def mmdet_configs_dir() -> Path:
    """``mmdet/.mim/configs`` of the installed mmdet."""
    import mmdet
    path = Path(mmdet.__file__).resolve().parent / '.mim' / 'configs'
    if not path.is_dir():
        raise FileNotFoundError(f'mmdet configs not found at {path} '
                                '(install mmdet with its configs)')
    return path


def get_entry(name_or_entry) -> ZooEntry:
    """Entry by family name (``ValueError`` listing the valid names)."""
    if isinstance(name_or_entry, ZooEntry):
        return name_or_entry
    if name_or_entry not in ZOO:
        raise ValueError(f'Unknown zoo family {name_or_entry!r}; valid: '
                         f'{", ".join(ZOO)}')
    return ZOO[name_or_entry]


def select(names: Optional[Sequence[str]] = None) -> Iterator[ZooEntry]:
    """Entries named in ``names`` (all when ``None``), in zoo order."""
    if names is None:
        return iter(ZOO.values())
    return iter([get_entry(n) for n in names])


# -- config transforms ----------------------------------------------------
def set_everywhere(node, key: str, value):
    """Set ``key`` to ``value`` in every dict nested in ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                node[k] = copy.deepcopy(value)
            else:
                set_everywhere(v, key, value)
    elif isinstance(node, (list, tuple)):
        for v in node:
            set_everywhere(v, key, value)


def drop_pretrained(node):
    """``init_cfg=None`` wherever it loads weights; no ``pretrained``."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node['init_cfg'] = None
        if 'pretrained' in node:
            node['pretrained'] = None
        for v in node.values():
            drop_pretrained(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            drop_pretrained(v)


def replace_sync_bn(node):
    """``SyncBN`` -> ``BN`` (no process group on a CPU)."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for v in node.values():
            replace_sync_bn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            replace_sync_bn(v)


def open_test_cfg(test_cfg, max_per_img: int = MAX_PER_IMG):
    """Every detection reaches the output: score / confidence thresholds 0,
    ``max_per_img`` detections, :data:`RPN_PROPOSALS` RPN proposals."""
    if not isinstance(test_cfg, dict):
        return
    for key in ('score_thr', 'conf_thr'):
        if key in test_cfg:
            test_cfg[key] = 0.0
    if 'max_per_img' in test_cfg or 'nms' in test_cfg:
        test_cfg['max_per_img'] = max_per_img
    rpn = test_cfg.get('rpn')
    if isinstance(rpn, dict):
        rpn['nms_pre'] = min(rpn.get('nms_pre', 1000), 2 * RPN_PROPOSALS)
        rpn['max_per_img'] = RPN_PROPOSALS
    for k in ('rcnn', ):
        open_test_cfg(test_cfg.get(k), max_per_img)


def max_per_img_of(model_cfg) -> int:
    """:data:`MAX_PER_IMG`, or every query of a query-based detector with a
    mask head (mmdet's QueryInst keeps one proposal per query in each
    result, so its ``max_per_img`` must be its ``num_proposals``)."""
    roi = model_cfg.get('roi_head') or {}
    queries = (model_cfg.get('rpn_head') or {}).get('num_proposals')
    if queries and roi.get('mask_head') is not None:
        return queries
    return MAX_PER_IMG


def shrink_pipeline(pipeline, scale):
    """Resize (and fixed-size Pad) to ``scale`` (w, h); no annotations."""
    out = []
    for t in pipeline:
        kind = str(t.get('type', ''))
        if 'LoadAnnotations' in kind:
            continue
        t = copy.deepcopy(t)
        if kind.endswith('Resize') and 'scale' in t:
            t['scale'] = tuple(scale)
        if kind.endswith('Pad') and t.get('size') is not None:
            t['size'] = tuple(scale)
        out.append(t)
    return out


def _load_config(entry: ZooEntry, shrink: bool = True,
                 input_scale=None) -> Config:
    cfg = Config.fromfile(str(mmdet_configs_dir() / entry.config))
    if entry.edit is not None:
        entry.edit(cfg)
    if shrink:
        if entry.shrink_edit is not None:
            entry.shrink_edit(cfg)
        for key, value in entry.everywhere.items():
            set_everywhere(cfg.model, key, value)
        cfg.merge_from_dict(
            {f'model.{k}': v for k, v in entry.overrides.items()})
    drop_pretrained(cfg.model)
    replace_sync_bn(cfg.model)
    open_test_cfg(cfg.model.get('test_cfg'), max_per_img_of(cfg.model))
    ds = cfg.test_dataloader.dataset
    ds.pipeline = shrink_pipeline(ds.pipeline,
                                  input_scale or entry.input_scale)
    return cfg


def zoo_config(entry, shrink: bool = True, input_scale=None) -> Config:
    """The config of a family (name or :class:`ZooEntry`): shrunk, or
    mmdet's own sizes (``shrink=False``; pretrained weights, thresholds and
    the test input size are still changed); ``input_scale`` (w, h)
    overrides the entry's."""
    return _load_config(get_entry(entry), shrink, input_scale)


def build_zoo_model(entry, seed: int = 0, shrink: bool = True,
                    input_scale=None) -> torch.nn.Module:
    """Build a family (shrunk by default) with seeded random weights.

    Weights are PyTorch's default initialisation plus the module
    constructors' own (seeded with ``seed``; no ``init_weights``, which
    would give nearly equal scores to every candidate), so scores differ
    between detections.

    Returns:
        nn.Module: the detector in eval mode with ``model.cfg`` set.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = zoo_config(entry, shrink, input_scale)
    torch.manual_seed(seed)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg.model)
    entry = get_entry(entry)
    draw_uninitialised(model, seed)
    for name in entry.init_modules:
        model.get_submodule(name).init_weights()
    if entry.init_gain is not None:
        reinit_weights(model, entry.init_gain, seed)
    if entry.post_build is not None:
        entry.post_build(model)
    model.cfg = cfg
    model.eval()
    return model


#: Parameters mmdet constructors leave uninitialised (``torch.Tensor(n, c)``,
#: drawn only by ``init_weights``), with the draw ``init_weights`` uses.
UNINITIALISED_PARAMETERS = ('level_embed', )  # DINO, Deformable DETR: normal_


def draw_uninitialised(model: torch.nn.Module, seed: int = 0):
    """Draw :data:`UNINITIALISED_PARAMETERS` from N(0, 1) with a generator
    seeded with ``seed``: left as they are, they hold whatever the memory
    held (sometimes NaN), and the model is not reproducible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name in UNINITIALISED_PARAMETERS:
                p = getattr(m, name, None)
                if isinstance(p, torch.nn.Parameter):
                    p.copy_(torch.randn(p.shape, generator=g))


def reinit_weights(model: torch.nn.Module, gain: float, seed: int = 0):
    """Every conv / linear weight from N(0, gain^2 / fan_in), biases from
    N(0, 0.1^2), from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, kinds):
                continue
            w = m.weight
            fan_in = w[0].numel()
            if isinstance(m, torch.nn.ConvTranspose2d):
                fan_in = w.shape[0] * w[0, 0].numel()
            w.copy_(torch.randn(w.shape, generator=g) * gain / fan_in**0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


# -- inputs ---------------------------------------------------------------
def synthetic_image(size=ORIGINAL_SIZE, seed: int = 0) -> np.ndarray:
    """A deterministic (h, w, 3) BGR uint8 image: smooth blobs + noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.08, 0.3) * min(h, w)
        blob = np.exp(-((yy - cy)**2 + (xx - cx)**2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(60, 200, size=3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def coco_image(size=ORIGINAL_SIZE, name: str = COCO_IMAGE) -> np.ndarray:
    """A COCO val2017 photograph (from the shared data folder), resized to
    ``size`` (w, h; ``None``: as it is): (h, w, 3) BGR uint8."""
    import mmcv
    from ..utils import shared_dir
    path = shared_dir() / 'data' / 'coco_val2017_tiny80' / 'images' / name
    if not path.is_file():
        raise FileNotFoundError(f'COCO image not found: {path}')
    img = mmcv.imread(str(path))
    return img if size is None else mmcv.imresize(img, tuple(size))


def zoo_image(source: str = 'coco', size=ORIGINAL_SIZE) -> np.ndarray:
    """``'coco'``: :func:`coco_image`; ``'synthetic'``:
    :func:`synthetic_image`."""
    if source == 'coco':
        return coco_image(size)
    if source == 'synthetic':
        return synthetic_image(size)
    raise ValueError(f"source must be 'coco' or 'synthetic', got {source!r}")


def zoo_inputs(model, img=None, source: str = 'coco'):
    """One image through the model's test pipeline and data preprocessor.

    Args:
        model: a detector with ``model.cfg`` (e.g. :func:`build_zoo_model`).
        img (ndarray, optional): (h, w, 3) BGR uint8; default
            :func:`zoo_image` of ``source``.

    Returns:
        tuple: ``inputs`` (1, 3, H, W) and ``data_samples`` (list of one).
    """
    from ..apis.inference import prepare_inputs
    if img is None:
        img = zoo_image(source)
    return prepare_inputs(model, img)
