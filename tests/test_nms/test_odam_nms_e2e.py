"""End-to-end: tools/test.py with Odam-NMS on a tiny generated CrowdHuman set
(tools/dataset_converters/make_crowd.py), reporting AP, MR, JI and
crowd/sparse recall; the model-level classic-NMS invariant."""
import copy
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmdet_odam.testing import load_tool

TINY = 'configs/tiny/fcos_tiny_coco-person.py'


def _make_crowd_module(repo_root):
    return load_tool('dataset_converters/make_crowd.py')


@pytest.fixture(scope='module')
def crowd_set(repo_root, coco_tiny_root, tmp_path_factory):
    """3 generated crowd scenes (160x120) in CrowdHuman format."""
    out = tmp_path_factory.mktemp('crowd')
    _make_crowd_module(repo_root).make_split(
        str(coco_tiny_root), str(out), 'val', num_images=3,
        persons_per_image=(4, 6), overlap_pairs=2.0, img_scale=(160, 120),
        seed=0, height_range=(0.5, 0.9), min_height=32,
        logger=lambda *a, **k: None)
    return out / 'val'


def _write_cfg(tmp_path, repo_root, crowd_root, nms):
    ann = str(crowd_root / 'annotation_val.odgt')
    cfg = f"""
_base_ = [{str(repo_root / TINY)!r}]
model = dict(
    bbox_head=dict(type='OdamFCOSHead'),
    test_cfg=dict(score_thr=0.0, nms_pre=300, max_per_img=100,
                  nms=dict(_delete_=True, **{nms!r})))
test_dataloader = dict(dataset=dict(
    _delete_=True, type='OdamCrowdHumanDataset',
    data_root={str(crowd_root) + '/'!r},
    ann_file='annotation_val.odgt', extra_ann_file='id_hw_val.json',
    data_prefix=dict(img='images/'), test_mode=True,
    pipeline={{{{_base_.test_pipeline}}}}))
test_evaluator = [
    dict(type='CrowdHumanMetric', ann_file={ann!r}, num_ji_process=1),
    dict(type='CrowdRecallMetric', ann_file={ann!r}),
]
"""
    path = tmp_path / f"cfg_{nms['type']}_{nms.get('corr_low', 0)}.py"
    path.write_text(cfg)
    return path


@pytest.fixture(scope='module')
def checkpoint(repo_root, tmp_path_factory):
    """Random-weight tiny FCOS (seeded), saved as an mmengine checkpoint."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(repo_root / TINY))
    cfg.model.bbox_head.type = 'OdamFCOSHead'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path, model, cfg


def _test(repo_root, cfg, ckpt, work_dir):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', str(cfg), str(ckpt), '--work-dir',
         str(work_dir)], cwd=repo_root, env=env, capture_output=True,
        text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    files = glob.glob(osp.join(str(work_dir), '*', '*.json'))
    assert len(files) == 1, (files, out[-3000:])
    with open(files[0]) as f:
        return json.load(f)


ODAM = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.2, corr_high=0.8)


@pytest.fixture(scope='module')
def odam_test_run(repo_root, crowd_set, checkpoint, tmp_path_factory):
    """Metrics of one tools/test.py run with Odam-NMS (0.5, 0.2, 0.8)."""
    tmp = tmp_path_factory.mktemp('odam_run')
    cfg = _write_cfg(tmp, repo_root, crowd_set, ODAM)
    return _test(repo_root, cfg, checkpoint[0], tmp / 'work')


def test_tools_test_odam_nms_reports_crowd_metrics(crowd_set, odam_test_run):
    odam = odam_test_run
    for key in ('crowd_human/mAP', 'crowd_human/mMR', 'crowd_human/JI',
                'crowd_recall/JI', 'crowd_recall/recall_crowd',
                'crowd_recall/recall_sparse', 'crowd_recall/recall',
                'crowd_recall/score_thr'):
        assert key in odam, sorted(odam)
        assert odam[key] is not None and 0 <= odam[key] <= 1, key
    # both metrics compute JI with the same protocol
    assert odam['crowd_recall/JI'] == pytest.approx(odam['crowd_human/JI'],
                                                    abs=1e-4)
    gts = [json.loads(line) for line in
           open(crowd_set / 'annotation_val.odgt')]
    n_valid = sum(1 for r in gts for b in r['gtboxes']
                  if b['tag'] == 'person' and not
                  b.get('extra', {}).get('ignore', 0))
    assert odam['crowd_recall/num_gt'] == n_valid
    assert odam['crowd_recall/num_gt_crowd'] > 0
    assert odam['crowd_recall/num_gt_crowd'] + \
        odam['crowd_recall/num_gt_sparse'] == n_valid


def _check_classic_invariant(model, head, min_kept=10):
    """On a random 120x160 image: ``odam_nms`` with (0, 1) keeps exactly
    what mmcv NMS keeps (boxes and scores); with (0.2, 0.8) the kept rows
    carry finite maps whose short edge is 50. ``head``: the module whose
    ``test_cfg.nms`` is switched. Returns the Odam-NMS predictions."""
    from mmdet.structures import DetDataSample
    torch.manual_seed(1)
    img = torch.rand(3, 120, 160) * 255
    meta = dict(img_shape=(120, 160), ori_shape=(120, 160),
                scale_factor=(1., 1.))
    data = model.data_preprocessor(
        dict(inputs=[img], data_samples=[DetDataSample(metainfo=meta)]))

    def run(nms):
        head.test_cfg.nms = nms
        with torch.no_grad():
            return model.predict(data['inputs'],
                                 copy.deepcopy(data['data_samples']))[0] \
                .pred_instances

    ref = run(dict(type='nms', iou_threshold=0.5))
    got = run(dict(type='odam_nms', iou_threshold=0.5, corr_low=0.0,
                   corr_high=1.0))
    assert len(ref) > min_kept
    assert torch.equal(ref.bboxes, got.bboxes)
    assert torch.equal(ref.scores, got.scores)
    odam = run(dict(type='odam_nms', iou_threshold=0.5, corr_low=0.2,
                    corr_high=0.8))
    assert odam.odam_maps.shape[0] == len(odam)
    assert min(odam.odam_maps.shape[1:]) == 50
    assert torch.isfinite(odam.odam_maps).all()
    return odam


def test_model_level_classic_invariant_and_maps(checkpoint, crowd_set):
    _, model, _ = checkpoint
    model = copy.deepcopy(model).eval()
    model.test_cfg.max_per_img = 1000
    model.test_cfg.score_thr = 0.0
    _check_classic_invariant(model, model.bbox_head)


@pytest.mark.parametrize('config,head', [
    ('configs/tiny/fcos_tiny_coco-person.py', 'OdamFCOSHead'),
    ('configs/tiny/faster-rcnn_tiny_coco-person.py', 'OdamStandardRoIHead'),
])
def test_bad_odam_nms_cfg_fails_at_build(repo_root, config, head):
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(repo_root / config))
    if head == 'OdamFCOSHead':
        cfg.model.bbox_head.type = head
        test_cfg = cfg.model.test_cfg
    else:
        cfg.model.roi_head.type = head
        test_cfg = cfg.model.test_cfg.rcnn
    test_cfg.nms = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.9,
                        corr_high=0.3)
    with pytest.raises(ValueError, match='corr_low'):
        MODELS.build(cfg.model)
    test_cfg.nms = dict(type='odam_nms', corr_type='spearman')
    with pytest.raises(ValueError, match='corr_type'):
        MODELS.build(cfg.model)
    test_cfg.nms = dict(type='OdamNMS')
    with pytest.raises(ValueError, match='odam_nms'):
        MODELS.build(cfg.model)
    test_cfg.nms = dict(type='odam_nms', iou_threshold=0.5, corr_low=0.2,
                        corr_high=0.8)
    MODELS.build(cfg.model)


def test_sweep_tool(repo_root, crowd_set, checkpoint, odam_test_run,
                    tmp_path, capsys):
    sweep = load_tool('analysis_tools/sweep_odam_nms.py')
    cfg = _write_cfg(tmp_path, repo_root, crowd_set, ODAM)
    out = tmp_path / 'sweep'
    args = [str(cfg), str(checkpoint[0]), '--corr-low', '0', '0.2',
            '--corr-high', '0.8', '1', '--out-dir', str(out)]
    res = sweep.main(args)
    assert (out / 'sweep.png').stat().st_size > 0
    assert (out / 'cache.pth').is_file()
    pairs = {(r['corr_low'], r['corr_high']): r for r in res['sweep']}
    assert set(pairs) == {(0.0, 0.8), (0.0, 1.0), (0.2, 0.8), (0.2, 1.0)}
    # (0, 1) is classic NMS
    for k in ('AP', 'MR', 'JI', 'recall_crowd'):
        assert pairs[(0.0, 1.0)][k] == res['classic_nms'][k]
    # the sweep's (0.2, 0.8) point (cached candidates, re-run NMS) == the
    # tools/test.py run of the head's own Odam-NMS path
    point = pairs[(0.2, 0.8)]
    for k, key in (('AP', 'crowd_human/mAP'), ('MR', 'crowd_human/mMR'),
                   ('JI', 'crowd_human/JI'),
                   ('recall_crowd', 'crowd_recall/recall_crowd'),
                   ('recall_sparse', 'crowd_recall/recall_sparse')):
        assert point[k] == pytest.approx(odam_test_run[key], abs=1e-6), k
    # second run reuses the cache and gives the same numbers
    capsys.readouterr()
    res2 = sweep.main(args)
    assert res2['sweep'] == res['sweep']
    assert 'using cached candidates' in capsys.readouterr().out
    # the cache holds both correlation types
    res3 = sweep.main(args + ['--corr-type', 'cosine'])
    assert 'using cached candidates' in capsys.readouterr().out
    assert res3['corr_type'] == 'cosine'
    assert res3['classic_nms'] == res['classic_nms']
    with pytest.raises(ValueError, match='odam_nms'):
        sweep.main([str(_write_cfg(tmp_path, repo_root, crowd_set,
                                   dict(type='nms', iou_threshold=0.5))),
                    str(checkpoint[0]), '--out-dir', str(out)])


def test_faster_rcnn_roi_head_classic_invariant(repo_root):
    """OdamStandardRoIHead: odam_nms(0, 1) == mmdet's multiclass NMS."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(
        str(repo_root / 'configs/tiny/faster-rcnn_tiny_coco-person.py'))
    cfg.model.roi_head.type = 'OdamStandardRoIHead'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    model.test_cfg.rcnn.max_per_img = 1000
    _check_classic_invariant(model, model.roi_head)


@pytest.mark.parametrize('head', ['OdamRetinaHead', 'OdamATSSHead'])
def test_other_dense_heads_classic_invariant(repo_root, head):
    """RetinaNet / ATSS heads: odam_nms(0, 1) == mmcv NMS; maps kept."""
    import mmdet_odam  # noqa: F401
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    retina = head == 'OdamRetinaHead'
    cfg = Config.fromfile(str(repo_root / TINY))
    bbox_head = dict(
        type=head, num_classes=1, in_channels=32, stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=4,
            scales_per_octave=2 if retina else 1,
            ratios=[0.5, 1.0, 2.0] if retina else [1.0],
            strides=[8, 16, 32]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
            target_stds=[1.0] * 4 if retina else [0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                      alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    if not retina:
        bbox_head.update(
            norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                 loss_weight=1.0))
    cfg.model.type = 'RetinaNet' if retina else 'ATSS'
    cfg.model.bbox_head = bbox_head
    cfg.model.test_cfg.max_per_img = 1000
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    _check_classic_invariant(model, model.bbox_head)
