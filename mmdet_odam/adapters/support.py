"""What an adapter or a gradient path reports when it probes a model.

An adapter (or a fast path) never assumes a detector fits it because of its
class: it *probes* the model (every mmdet method it mirrors must be the base
class's own, the structure it needs must be there) and answers with a
:class:`Support`: ``ok`` and, when not, the reasons in plain words.
"""
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Sequence

__all__ = [
    'Support', 'equivalent_override', 'overridden_methods', 'override_reasons'
]


@dataclass(frozen=True)
class Support:
    """Whether a model fits an adapter / path, and why not.

    Attributes:
        ok (bool): the adapter accepts the model.
        reasons (tuple[str]): why it declines (empty when ``ok``).
    """
    ok: bool
    reasons: tuple = field(default_factory=tuple)

    @classmethod
    def yes(cls) -> 'Support':
        return cls(True, ())

    @classmethod
    def no(cls, *reasons: str) -> 'Support':
        return cls(False, tuple(reasons))

    @classmethod
    def from_reasons(cls, reasons: Iterable[str]) -> 'Support':
        """``ok`` exactly when ``reasons`` is empty."""
        reasons = tuple(reasons)
        return cls(not reasons, reasons)

    def __bool__(self) -> bool:
        return self.ok


def equivalent_override(fn: Callable) -> Callable:
    """Mark a method override as behaviour-preserving for the adapters'
    probes (it returns what the base method returns, plus tracking fields;
    the predict check verifies it on first use)."""
    fn.__odam_equivalent__ = True
    return fn


def overridden_methods(obj, base: type, names: Sequence[str]) -> List[str]:
    """Names in ``names`` that ``type(obj)`` resolves to something other than
    ``base``'s own implementation (overrides marked with
    :func:`equivalent_override` do not count)."""
    cls = type(obj)
    out = []
    for name in names:
        mine = getattr(cls, name, None)
        ref = getattr(base, name, None)
        if mine is ref or getattr(mine, '__odam_equivalent__', False):
            continue
        out.append(name)
    return out


def override_reasons(obj, base: type, names: Sequence[str]) -> List[str]:
    """``['<Class> overrides a, b of <Base>']`` when ``type(obj)`` overrides
    some of ``names`` (see :func:`overridden_methods`), else ``[]``."""
    over = overridden_methods(obj, base, names)
    if not over:
        return []
    return [f'{type(obj).__name__} overrides {", ".join(over)} of '
            f'{base.__name__}']
