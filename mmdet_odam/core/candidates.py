"""Dense-head candidates: one container for the rows a path explains.

A dense head's candidate is a (image, FPN level, prior, class) tuple: the
prior ``loc_inds`` indexes the level's priors in mmdet's order (cell-major,
``num_base_priors`` per cell). Every gradient path takes the candidates of a
batch as one :class:`Candidates`, indexable like detectron2's ``Instances``
(a row selection gives a :class:`Candidates` of the same fields), instead of
four loose tensors passed positionally.
"""
from dataclasses import dataclass, fields
from typing import Iterable, List, Optional, Tuple

import torch
from torch import Tensor

_INDEX_FIELDS = ('img_inds', 'level_ids', 'loc_inds', 'labels')


@dataclass
class Candidates:
    """N dense-head candidates of a batch.

    Attributes:
        img_inds (Tensor): (N,) long, image of the batch.
        level_ids (Tensor): (N,) long, FPN level.
        loc_inds (Tensor): (N,) long, prior index within the level.
        labels (Tensor): (N,) long, class.
        bboxes (Tensor, optional): (N, 4) xyxy in network-input pixels (the
            size of a path's smoothing kernel; decoded from the priors when
            missing).
    """
    img_inds: Tensor
    level_ids: Tensor
    loc_inds: Tensor
    labels: Tensor
    bboxes: Optional[Tensor] = None

    def __post_init__(self):
        n = None
        for name in _INDEX_FIELDS:
            t = torch.as_tensor(getattr(self, name))
            if t.dim() != 1:
                raise ValueError(
                    f'Candidates.{name} must be (N,), got {tuple(t.shape)}')
            if t.dtype.is_floating_point or t.dtype == torch.bool:
                raise TypeError(
                    f'Candidates.{name} must hold integers, got {t.dtype}')
            if n is None:
                n = t.shape[0]
            elif t.shape[0] != n:
                raise ValueError(f'Candidates.{name} has {t.shape[0]} rows, '
                                 f'img_inds {n}')
            setattr(self, name, t.long())
        if self.bboxes is not None and tuple(self.bboxes.shape) != (n, 4):
            raise ValueError(f'Candidates.bboxes must be ({n}, 4), got '
                             f'{tuple(self.bboxes.shape)}')

    @classmethod
    def empty(cls, device=None) -> 'Candidates':
        """No candidates."""
        z = torch.zeros(0, dtype=torch.long, device=device)
        return cls(z, z, z, z)

    @classmethod
    def of_image(cls, level_ids: Tensor, loc_inds: Tensor, labels: Tensor,
                 bboxes: Optional[Tensor] = None,
                 img: int = 0) -> 'Candidates':
        """Candidates of one image ``img`` of the batch."""
        return cls(torch.full_like(torch.as_tensor(labels), img).long(),
                   level_ids, loc_inds, labels, bboxes)

    @classmethod
    def cat(cls, parts: Iterable['Candidates']) -> 'Candidates':
        """Rows of ``parts`` in order (``bboxes`` kept if every part has
        them)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        kw = {k: torch.cat([getattr(p, k) for p in parts])
              for k in _INDEX_FIELDS}
        if all(p.bboxes is not None for p in parts):
            kw['bboxes'] = torch.cat([p.bboxes for p in parts])
        return cls(**kw)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, item) -> 'Candidates':
        """Rows ``item`` (int, slice, index or bool mask) as Candidates."""
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        kw = {f.name: None if getattr(self, f.name) is None else
              getattr(self, f.name)[item] for f in fields(self)}
        return Candidates(**kw)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def to(self, device) -> 'Candidates':
        kw = {f.name: None if getattr(self, f.name) is None else
              getattr(self, f.name).to(device) for f in fields(self)}
        return Candidates(**kw)

    def with_bboxes(self, bboxes: Optional[Tensor]) -> 'Candidates':
        """The same rows with ``bboxes`` replaced."""
        return Candidates(self.img_inds, self.level_ids, self.loc_inds,
                          self.labels, bboxes)

    def index_tensor(self) -> Tensor:
        """(4, N) ``img_inds, level_ids, loc_inds, labels`` stacked (a key
        for caches)."""
        return torch.stack([getattr(self, k) for k in _INDEX_FIELDS])

    def check_levels(self, num_levels: int) -> None:
        """Every ``level_ids`` in ``[0, num_levels)``, else ValueError."""
        if len(self) and (int(self.level_ids.min()) < 0
                          or int(self.level_ids.max()) >= num_levels):
            raise ValueError(f'Candidates.level_ids must be in '
                             f'[0, {num_levels}), got '
                             f'[{int(self.level_ids.min())}, '
                             f'{int(self.level_ids.max())}]')

    def level_groups(self) -> List[Tuple[int, int, Tensor]]:
        """:func:`level_groups` of the rows."""
        return level_groups(self.img_inds, self.level_ids)


def level_groups(img_inds: Tensor,
                 level_ids: Tensor) -> List[Tuple[int, int, Tensor]]:
    """Candidates grouped by the forward they depend on.

    Args:
        img_inds (Tensor): (N,) image of each candidate.
        level_ids (Tensor): (N,) FPN level of each candidate.

    Returns:
        list[tuple]: ``(image, level, rows)``, ``rows`` (n,) indices into
        the N candidates, ascending; groups ordered by (level, image).
    """
    if img_inds.shape != level_ids.shape or img_inds.dim() != 1:
        raise ValueError(f'img_inds {tuple(img_inds.shape)} and level_ids '
                         f'{tuple(level_ids.shape)} must be (N,) each')
    out = []
    if img_inds.numel() == 0:
        return out
    key = level_ids.long() * (int(img_inds.max()) + 1) + img_inds.long()
    for k in key.unique().tolist():
        rows = (key == k).nonzero().squeeze(1)
        out.append((int(img_inds[rows[0]]), int(level_ids[rows[0]]), rows))
    return out
