"""Choose the adapter for a detector: specific adapters first, each probing
the model; the exact generic autograd path is the terminal fallback and
accepts every detector."""
from dataclasses import dataclass
from typing import Callable, List, Tuple

from torch import nn

from .dense import probe_dense_detector
from .roi import probe_two_stage_detector
from .support import Support


@dataclass(frozen=True)
class Adapter:
    """A family adapter: its name, the explainer that implements it (name in
    :data:`mmdet_odam.explainers.EXPLAINERS`) and its probe."""
    name: str
    explainer: str
    probe: Callable[[nn.Module], Support]


def _generic_probe(model: nn.Module) -> Support:
    return Support.yes()


#: Specific adapters, tried in order.
ADAPTERS: Tuple[Adapter, ...] = (
    Adapter('dense', 'odam_dense', probe_dense_detector),
    Adapter('two_stage', 'odam_two_stage', probe_two_stage_detector),
)
#: Exact autograd through the detector's own ``predict``: never declines.
GENERIC = Adapter('generic', 'odam_generic', _generic_probe)


@dataclass(frozen=True)
class Resolution:
    """The adapter chosen for a model and why the others declined.

    Attributes:
        adapter (Adapter): the chosen adapter.
        declined (list[tuple[str, tuple[str]]]): (adapter name, reasons) of
            every specific adapter tried before it that declined.
    """
    adapter: Adapter
    declined: List[Tuple[str, tuple]]

    def summary(self) -> str:
        """One line per declined adapter, e.g. for a log message."""
        return '; '.join(f'{name}: {", ".join(r)}'
                         for name, r in self.declined)


def resolve(model: nn.Module) -> Resolution:
    """The first adapter whose probe accepts ``model``, else
    :data:`GENERIC`."""
    declined = []
    for adapter in ADAPTERS:
        support = adapter.probe(model)
        if support.ok:
            return Resolution(adapter, declined)
        declined.append((adapter.name, support.reasons))
    return Resolution(GENERIC, declined)
