# Config fragment: explain every test image with ODAM while tools/test.py
# (or tools/dist_test.sh) runs. Add it to any detector config:
#
#   _base_ = ['path/to/detector_config.py', '../odam/odam_hook_fragment.py']
#
# Files go to <work_dir>/<timestamp>/odam/: <stem>.npz (boxes, scores,
# labels, maps_<target>), <stem>/det<k>_<target>.jpg overlays,
# <stem>_grid.jpg (rows: detections, columns: targets) and index.html.
# The test metrics are identical to a run without the hook.
# The detector config must import the plugin (configs/_base_/default_runtime.py
# does: custom_imports = dict(imports=['mmdet_odam'])); tools/test.py of this
# repository imports it anyway.
custom_hooks = [
    dict(
        type='OdamHook',
        targets=['cls', 'combined'],
        score_thr=0.3,
        topk=20,
        out_dir='odam',
        method='odam',
        layer=None,  # default: the FPN level of each detection / RoI feats
        smoothing='gaussian',
        grad_mode='pos_relu',
        interval=1)
]
