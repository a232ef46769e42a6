# Odam-Train twin of the CPU fine-tune pair with the separation term weighted
# twice the consistency term (loss_odam_sep = 0.5 * 2.0 * L_sep,
# loss_odam_con = 0.5 * L_con): at iteration 50 of the balanced twin
# (..._cpu-ft.py) consistency won and overlapping people's maps grew alike
# (docs/odam_train_diagnosis.md). Same start checkpoint, data order, seed and
# schedule as ../pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py.
#   OMP_NUM_THREADS=1 python tools/train.py \
#       configs/odam_train/fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft-sep2.py
# or both twins at once: ODAM_CFG=sep2 bash tools/train_default_models.sh cpu-ft
_base_ = ['./fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py']

model = dict(bbox_head=dict(loss_odam=dict(sep_weight=2.0)))
