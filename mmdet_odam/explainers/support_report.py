"""What path each target of an explanation takes, and why: the answer of
:func:`mmdet_odam.apis.explain_support`."""
from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass(frozen=True)
class PathChoice:
    """The gradient path of one target.

    Attributes:
        target (str): target name (``cls``, ``left``...).
        adapter (str): adapter that explains the model (``dense``,
            ``two_stage``, ``generic``).
        explainer (str): registry name of the explainer.
        path (str): gradient path (``patch``, ``level_autograd``,
            ``roi_adjoint``, ``roi_features``, ``autograd``...).
        exact (bool): the maps use the exact gradient.
        layer (str): explained layer.
        reasons (tuple[str]): why faster paths or adapters were not taken.
    """
    target: str
    adapter: str
    explainer: str
    path: str
    exact: bool
    layer: str
    reasons: Tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return dict(target=self.target, adapter=self.adapter,
                    explainer=self.explainer, path=self.path,
                    exact=self.exact, layer=self.layer,
                    reasons=list(self.reasons))


@dataclass(frozen=True)
class SupportReport:
    """Per-target path choices for one model (``str()`` gives a table);
    ``notes``: what applies to every target (e.g. how deformable
    convolutions are back-propagated)."""
    model: str
    choices: List[PathChoice]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> List[dict]:
        """One dict per target (keys of :meth:`PathChoice.as_dict`)."""
        return [c.as_dict() for c in self.choices]

    def __str__(self) -> str:
        head = ('target', 'adapter', 'path', 'exact', 'layer')
        body = [(c.target, c.adapter, c.path, 'yes' if c.exact else 'no',
                 c.layer) for c in self.choices]
        widths = [max(len(str(r[i])) for r in [head] + body)
                  for i in range(len(head))]
        lines = [f'{self.model}: explanation paths']
        for r in [head] + body:
            lines.append('  ' + '  '.join(str(v).ljust(w)
                                          for v, w in zip(r, widths)))
        reasons = []
        for c in self.choices:
            reasons += [r for r in c.reasons if r not in reasons]
        lines += [f'  - {r}' for r in reasons + list(self.notes)]
        return '\n'.join(lines)
