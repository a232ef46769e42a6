"""tools/analysis_tools/object_discrimination.py: argument errors, and an
end-to-end run of the shipped person FCOS on the bundled crowd scenes
(CPU, seconds)."""
import json

import pytest

from mmdet_odam.testing import load_tool
from mmdet_odam.utils import repo_root

ROOT = repo_root()
CFG = str(ROOT / 'configs/tiny/fcos_tiny_coco-person.py')
CROWD_CFG = str(ROOT / 'configs/pretrained/'
                'fcos_mobilenetv2_crowd-person_demo-crowd.py')
CKPT = str(ROOT / 'checkpoints/fcos_mobilenetv2_crowd-person.pth')


def test_bad_model_arguments(tmp_path):
    tool = load_tool('analysis_tools/object_discrimination.py')
    with pytest.raises(SystemExit):  # NAME CONFIG CHECKPOINT: 3 values
        tool.main(['--model', 'a', CFG])
    with pytest.raises(FileNotFoundError, match="checkpoint of 'a'"):
        tool.main(['--model', 'a', CFG, str(tmp_path / 'missing.pth')])
    ckpt = tmp_path / 'c.pth'
    ckpt.write_bytes(b'')
    with pytest.raises(ValueError, match='names must differ'):
        tool.main(['--model', 'a', CFG, str(ckpt),
                   '--model', 'a', CFG, str(ckpt)])


def test_end_to_end_on_crowd_scenes(tmp_path):
    out = tmp_path / 'res.json'
    res = load_tool('analysis_tools/object_discrimination.py').main(['--model', 'a', CROWD_CFG, CKPT,
                            '--model', 'b', CROWD_CFG, CKPT,
                            '--max-images', '3', '--n-boot', '50',
                            '--odam-loss', '--out', str(out)])
    assert json.loads(out.read_text()) == res
    assert res['a'] == res['b']  # deterministic, models independent
    r = res['a']
    assert r['images'] == 3
    for key in ('corr_same', 'corr_diff', 'odi_box'):
        assert r[key]['n_objects'] > 0 and r[key]['n_images'] > 0
        assert r[key]['low'] <= r[key]['value'] <= r[key]['high']
    for key in ('corr_same', 'corr_diff'):
        assert -1.0 <= r[key]['low'] and r[key]['high'] <= 1.0
    assert 0.0 <= r['odi_box']['low'] and r['odi_box']['high'] <= 1.0
    for key in ('loss_odam_con', 'loss_odam_sep'):  # one value per image
        assert r[key]['n_objects'] == r[key]['n_images'] == 3
        assert 0.0 < r[key]['low'] <= r[key]['value'] <= r[key]['high']
    # a trained detector's maps correlate more within an object than
    # across overlapping objects (paper Fig. 4)
    assert r['corr_same']['value'] > r['corr_diff']['value']
