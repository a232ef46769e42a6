# Odam-Train twin of the CPU fine-tune pair where separation dominates:
# loss_odam_con = 0.1 * L_con, loss_odam_sep = 0.1 * 10.0 * L_sep (the sep2
# twin: 0.5 * L_con, 1.0 * L_sep). Same separation weight as sep2, a fifth
# of its consistency weight: tells whether consistency is what spreads the
# maps of overlapping people onto each other (docs/odam_train_diagnosis.md).
# Same start checkpoint, data order, seed and schedule as
# ../pretrained/fcos_mobilenetv2_crowd-person_cpu-ft.py.
#   ODAM_CFG=sepdom bash tools/train_default_models.sh cpu-ft
_base_ = ['./fcos_mobilenetv2_fpn_odam-train_crowd-scenes_cpu-ft.py']

model = dict(bbox_head=dict(loss_odam=dict(loss_weight=0.1, sep_weight=10.0)))
