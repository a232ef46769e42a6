# Odam-Train twin of the CPU fine-tune pair on a finer loss grid: the maps
# the loss compares are rendered at image / 8 instead of the authors'
# image / 16 (at / 16 a small person covers 2-4 cells that its overlapping
# neighbour shares). Losses and weights otherwise as
# ./fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py (0.5 * L_con,
# 0.5 * L_sep); same start checkpoint, data order, seed and schedule as
# ../pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py.
#   ODAM_CFG=stride8 bash tools/train_default_models.sh cpu-ft
_base_ = ['./fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py']

model = dict(bbox_head=dict(loss_odam=dict(map_stride=8)))
