# The tiny FCOS test config with OdamHook: `tools/test.py` on it writes ODAM
# explanations of the 8 test images under <work_dir>/<timestamp>/odam/.
#
#   python tools/test.py configs/odam/fcos_tiny_coco-person_odam-hook.py \
#       CHECKPOINT --work-dir work_dirs/odam_hook
_base_ = ['../tiny/fcos_tiny_coco-person.py', './odam_hook_fragment.py']

# the tiny model is barely trained: explain its top boxes whatever the score
custom_hooks = [
    dict(
        type='OdamHook',
        targets=['cls', 'combined'],
        score_thr=0.0,
        topk=5,
        out_dir='odam')
]
