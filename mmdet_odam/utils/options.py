"""Typed options: config strings to ``str`` Enum members."""
from enum import Enum
from typing import Type, TypeVar

E = TypeVar('E', bound=Enum)


def parse_enum(enum_cls: Type[E], value, what: str) -> E:
    """``value`` (a member or its name, case-insensitive) as a member of
    ``enum_cls``; raises ``ValueError`` naming ``what`` and the valid names.
    """
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        for member in enum_cls:
            if member.value == value.lower().strip():
                return member
    valid = ', '.join(m.value for m in enum_cls)
    raise ValueError(f'Unknown {what} {value!r}; valid names: {valid}')
