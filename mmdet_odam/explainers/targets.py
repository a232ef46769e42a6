"""Typed options of an explanation: which scalar is explained
(:class:`Target`), how the gradient enters the map (:class:`GradMode`, paper
App. A.5.6) and how the gradient map is smoothed (:class:`Smoothing`, paper
Eq. 2)."""
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, List, Sequence, Tuple, Union

from ..utils.options import parse_enum


class Target(str, Enum):
    """Scalar of a detection that is explained.

    ``cls`` is the detection's final score exactly as the detector reports it
    (FCOS/ATSS: sigmoid(cls) * sigmoid(centerness), RetinaNet: sigmoid(cls),
    Faster R-CNN: softmax). Box targets are signed so a positive gradient means
    "grow the box": left = -x1, top = -y1, right = x2, bottom = y2 of the
    decoded box in pixels of the network input. ``combined`` is the
    element-wise max of the five normalised maps (paper Sec. 4.1).
    ``mask`` (instance-segmentation detectors with a RoI mask head, e.g.
    Mask R-CNN) is the sum of the detection's mask logits inside its own
    predicted mask: what made the mask, per instance.
    """
    CLS = 'cls'
    LEFT = 'left'
    TOP = 'top'
    RIGHT = 'right'
    BOTTOM = 'bottom'
    COMBINED = 'combined'
    MASK = 'mask'


#: The five scalar targets whose maps form ``combined``.
BASE_TARGETS: Tuple[Target, ...] = (Target.CLS, Target.LEFT, Target.TOP,
                                    Target.RIGHT, Target.BOTTOM)
BOX_TARGETS: Tuple[Target, ...] = BASE_TARGETS[1:]
#: (column in an xyxy box, sign) of each box target.
BOX_COORDS = {Target.LEFT: (0, -1.0), Target.TOP: (1, -1.0),
              Target.RIGHT: (2, 1.0), Target.BOTTOM: (3, 1.0)}


class GradMode(str, Enum):
    """How gradients enter H = f(sum_k Phi(g)_k * A_k) (paper App. A.5.6).

    ``pos_relu`` (default, Eq. 2): f = ReLU with g; ``neg_relu``: ReLU with -g
    (features that shrink the box / lower the score); ``pos_norelu``: no ReLU
    (signed map); ``abs``: absolute value instead of ReLU.
    """
    POS_RELU = 'pos_relu'
    NEG_RELU = 'neg_relu'
    POS_NORELU = 'pos_norelu'
    ABS = 'abs'


class Smoothing(str, Enum):
    """Smoothing Phi of the gradient map: ``gaussian`` (paper Eq. 2, kernel
    from the box size, see :func:`mmdet_odam.core.box_sigmas`) or ``none``
    (what the authors' public code does)."""
    GAUSSIAN = 'gaussian'
    NONE = 'none'


class ExplainPath(str, Enum):
    """Which gradient path computes the maps.

    ``auto`` (default): the fastest path that gives the exact gradient
    where one exists, else the documented approximation of its adapter
    (see ``explain_support``); ``exact``: always an exact gradient (per
    candidate autograd where no exact fast path applies); ``fast``: the
    batched fast path wherever it applies, even where it approximates the
    gradient (GroupNorm heads with frozen statistics).
    """
    AUTO = 'auto'
    EXACT = 'exact'
    FAST = 'fast'


def parse_path(value=None, exact=None) -> ExplainPath:
    """Parse ``path`` (``'auto'|'exact'|'fast'``); ``exact`` is the older
    spelling (``True`` -> exact, ``False`` -> fast, ``'auto'``), accepted
    when ``path`` is not given. Raises ``ValueError`` on unknown names or
    on both given and disagreeing."""
    old = None
    if exact is not None:
        aliases = {True: ExplainPath.EXACT, False: ExplainPath.FAST,
                   'auto': ExplainPath.AUTO, 'yes': ExplainPath.EXACT,
                   'no': ExplainPath.FAST}
        if isinstance(exact, ExplainPath):
            old = exact
        elif isinstance(exact, (bool, str)) and exact in aliases:
            old = aliases[exact]
        else:
            raise ValueError(f"exact must be True, False or 'auto', got "
                             f'{exact!r} (prefer path=auto|exact|fast)')
    if value is None:
        return old if old is not None else ExplainPath.AUTO
    new = parse_enum(ExplainPath, value, 'path')
    if old is not None and old != new:
        raise ValueError(f'path={new.value!r} and exact={exact!r} disagree; '
                         'give path only')
    return new


def parse_target(value: Union[str, Target]) -> Target:
    """Parse one target name; raises ``ValueError`` listing valid names."""
    return parse_enum(Target, value, 'target')


def parse_targets(values: Union[str, Target, Iterable]) -> List[Target]:
    """Parse a target name, a comma separated string or a sequence of names.

    Duplicates are dropped, order is kept. Empty input is an error.
    """
    if isinstance(values, (str, Target)):
        values = [v for v in str(values.value if isinstance(values, Target)
                                 else values).split(',') if v.strip()]
    out: List[Target] = []
    for v in values:
        t = parse_target(v)
        if t not in out:
            out.append(t)
    if not out:
        raise ValueError('At least one target is needed; valid names: ' +
                         ', '.join(m.value for m in Target))
    return out


def expand_targets(targets: Sequence[Target]) -> List[Target]:
    """Scalar targets that must be computed for ``targets`` (``combined``
    needs all five)."""
    need = [t for t in targets if t != Target.COMBINED]
    if Target.COMBINED in targets:
        need += [t for t in BASE_TARGETS if t not in need]
    return need


def box_target(boxes, target: Union[str, Target]):
    """Signed coordinate of (N, 4) xyxy boxes for a box target -> (N,):
    left = -x1, top = -y1, right = x2, bottom = y2 (see :class:`Target`)."""
    target = parse_target(target)
    if target not in BOX_COORDS:
        raise ValueError(f'{target.value!r} is not a box target; box targets: '
                         + ', '.join(t.value for t in BOX_TARGETS))
    j, sign = BOX_COORDS[target]
    return sign * boxes[:, j]


def parse_grad_mode(value: Union[str, GradMode]) -> GradMode:
    """Parse a gradient mode; raises ``ValueError`` listing valid names."""
    return parse_enum(GradMode, value, 'grad_mode')


def parse_smoothing(value: Union[str, Smoothing, None]) -> Smoothing:
    """Parse a smoothing name (``None`` means ``none``)."""
    if value is None or value is False:
        return Smoothing.NONE
    return parse_enum(Smoothing, value, 'smoothing')


@dataclass(frozen=True)
class MapOptions:
    """How the batched candidate maps of Odam-NMS and Odam-Train are
    computed (:func:`~mmdet_odam.explainers.dense.dense_candidate_maps`,
    :func:`~mmdet_odam.explainers.two_stage.roi_candidate_maps`).

    Names are parsed on construction (``MapOptions('left',
    smoothing='none')``); a bad name raises ``ValueError`` listing the
    valid ones.

    Attributes:
        target (Target): the scalar explained (one; not ``combined``).
        smoothing (Smoothing): smoothing of the gradient map.
        grad_mode (GradMode): how the gradient enters the map.
        create_graph (bool): maps differentiable through the gradient
            (w.r.t. the features and the head's weights; Odam-Train);
            otherwise through the feature factor only.
    """
    target: Target = Target.CLS
    smoothing: Smoothing = Smoothing.GAUSSIAN
    grad_mode: GradMode = GradMode.POS_RELU
    create_graph: bool = False

    def __post_init__(self):
        target = parse_target(self.target)
        if target == Target.COMBINED:
            raise ValueError(
                "candidate maps explain one scalar target, not 'combined' "
                '(combine normalised maps instead)')
        object.__setattr__(self, 'target', target)
        object.__setattr__(self, 'smoothing',
                           parse_smoothing(self.smoothing))
        object.__setattr__(self, 'grad_mode',
                           parse_grad_mode(self.grad_mode))
        object.__setattr__(self, 'create_graph', bool(self.create_graph))


def odam_train_map_options(loss_odam) -> MapOptions:
    """The maps an ``OdamTrainLoss`` compares: the ``cls`` target with the
    loss's ``smoothing`` and ``grad_mode``, differentiable through the
    gradient (``create_graph``)."""
    return MapOptions(Target.CLS, loss_odam.smoothing, loss_odam.grad_mode,
                      create_graph=True)
