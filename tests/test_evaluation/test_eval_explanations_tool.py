"""End-to-end run of tools/analysis_tools/eval_explanations.py on the real
COCO person subset with a tiny random-weight FCOS (CPU, seconds)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdet_odam.testing import load_tool
from mmdet_odam.utils import repo_root, shared_dir

ROOT = repo_root()
CFG = str(ROOT / 'configs/tiny/fcos_tiny_coco-person.py')


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CFG).model)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return str(path)


def args(out, ckpt, *extra):
    return [CFG, ckpt, '--out-dir', str(out), '--max-images', '4',
            '--max-objects', '2', '--iou-thr', '0.0', '--score-thr', '0.0',
            '--drise-masks', '8', '--n-steps', '10', '--eval-every', '5',
            *extra]


def read(out):
    with open(osp.join(out, 'objects.jsonl')) as f:
        return [json.loads(x) for x in f]


def test_tool_runs_resumes_and_writes_tables(tmp_path, ckpt):
    assert shared_dir().is_dir()
    tool = load_tool('analysis_tools/eval_explanations.py')
    out = tmp_path / 'run'
    summary = tool.main(args(out, ckpt, '--sanity-check'))
    recs = read(out)
    methods = ['odam', 'gradcam', 'gradcampp', 'drise']
    assert sorted({r['method'] for r in recs}) == sorted(methods)
    assert len(recs) == 2 * 4
    for r in recs:
        assert len(r['deletion']) == 3 and len(r['vea']) == 9
        assert r['deletion'][0] == pytest.approx(100.0)
        assert 0 <= r['pg_box'] <= 1 and 'sanity_pearson' in r
    assert summary['odam']['n_objects'] == 2
    for f in ('summary.json', 'tables.md', 'fig5_deletion.png',
              'fig5_insertion.png', 'fig5_vea.png'):
        assert (out / f).is_file(), f
    md = (out / 'tables.md').read_text()
    assert 'Tab. 1' in md and 'Tab. 3a' in md and 'Tab. 4' in md
    assert 'Sanity check' in md

    # a killed run: keep the first record and a torn line, then resume
    lines = (out / 'objects.jsonl').read_text().splitlines()
    (out / 'objects.jsonl').write_text(lines[0] + '\n' + lines[1][:20])
    tool.main(args(out, ckpt, '--sanity-check'))
    again = read_valid(out)
    assert len(again) == 8
    assert again[0] == recs[0]  # finished work is kept, not recomputed
    (out / 'tables.md').unlink()
    again_sum = tool.main(args(out, ckpt, '--summarize-only'))
    assert again_sum['odam']['pg_box'] == pytest.approx(
        summary['odam']['pg_box'])
    assert (out / 'tables.md').is_file()
    keyset = {(r['key'], r['method']) for r in again}
    assert keyset == {(r['key'], r['method']) for r in recs}


def read_valid(out):
    res = []
    for line in (out / 'objects.jsonl').read_text().splitlines():
        try:
            res.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return res


def test_tool_dataset_without_masks(tmp_path, ckpt):
    src = shared_dir() / 'data/coco_val2017_tiny80/annotations/' \
        'instances_val2017.json'
    coco = json.loads(src.read_text())
    for a in coco['annotations']:
        a.pop('segmentation', None)
    ann = tmp_path / 'nomask.json'
    ann.write_text(json.dumps(coco))
    tool = load_tool('analysis_tools/eval_explanations.py')
    out = tmp_path / 'nomask'
    summary = tool.main(
        args(out, ckpt, '--methods', 'odam', 'gradcam', '--cfg-options',
             f'test_dataloader.dataset.ann_file={ann}'))
    assert 'pg_box' in summary['odam'] and 'pg_mask' not in summary['odam']
    notes = json.loads((out / 'summary.json').read_text())['notes']
    assert any('no instance masks' in n for n in notes)
    assert 'n/a' in (out / 'tables.md').read_text()


def test_tool_bad_input(tmp_path, ckpt):
    tool = load_tool('analysis_tools/eval_explanations.py')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        tool.main([CFG, str(tmp_path / 'missing.pth'), '--out-dir',
                   str(tmp_path)])
    with pytest.raises(SystemExit):
        tool.parse_args([CFG, ckpt, '--out-dir', 'x', '--iou-thr', '1.5'])


def test_methods_accept_spaces_and_commas():
    tool = load_tool('analysis_tools/eval_explanations.py')
    base = [CFG, 'x.pth', '--out-dir', 'x', '--methods']
    assert tool.parse_args(base + ['odam', 'gradcam']).methods == [
        'odam', 'gradcam']
    assert tool.parse_args(base + ['odam,gradcam']).methods == [
        'odam', 'gradcam']
    assert tool.parse_args(base + ['odam,', 'drise']).methods == [
        'odam', 'drise']
    with pytest.raises(SystemExit):
        tool.parse_args(base + ['odam,gradcom'])


def test_summary_intervals_over_images():
    from mmdet_odam.evaluation.functional import markdown_tables, summarize
    # image a: two objects with ODI .2 and .4, image b: one with .9
    recs = [dict(key=k, img_id=i, method='odam', odi_box=v)
            for k, i, v in (('a0', 'a', .2), ('a1', 'a', .4),
                            ('b0', 'b', .9))]
    s = summarize(recs, ['odam'])['odam']
    assert s['odi_box'] == pytest.approx(0.5)
    # resamples: aa -> .3, ab -> .5, bb -> .9: the interval spans [.3, .9]
    assert s['odi_box_ci'] == pytest.approx([0.3, 0.9])
    assert (s['n_objects'], s['n_images']) == (3, 2)
    assert '50.0 [30.0, 90.0]' in markdown_tables({'odam': s})


def test_drise_normalize_option_and_resume_guard(tmp_path, ckpt):
    tool = load_tool('analysis_tools/eval_explanations.py')
    one = ('--methods', 'drise', '--max-objects', '1', '--skip-deletion')
    recs = {}
    for norm in ('coverage', 'raw'):
        out = tmp_path / norm
        tool.main(args(out, ckpt, *one, '--drise-normalize', norm))
        (recs[norm],) = read(out)
    # same object and masks, another map: the map metrics move
    assert recs['coverage']['key'] == recs['raw']['key']
    assert recs['coverage']['compactness'] != recs['raw']['compactness']
    # resuming a run with a setting that changes results is refused, by name
    with pytest.raises(ValueError, match='drise_normalize'):
        tool.main(args(tmp_path / 'raw', ckpt, *one))
    # options that do not change finished records may change
    tool.main(args(tmp_path / 'raw', ckpt, *one, '--drise-normalize', 'raw',
                   '--drise-chunk', '4', '--max-images', '5'))
    assert read(tmp_path / 'raw') == [recs['raw']]
