"""``Frozen``: small immutable records for the modules every machine imports.

``dataclasses`` costs a machine ~7 ms to import (it pulls in ``inspect``, ``ast``, ``dis``), so
the records on the worker's import path (keys, settings, task options, the worker's handoff)
are plain classes with ``__slots__`` on this base instead. A subclass lists its fields in
``__match_args__`` (in order, as a dataclass does) and sets them with ``_set`` in
``__init__``; instances compare, hash and print like frozen dataclasses, refuse assignment,
``replace(**changes)`` copies one with some fields changed, and they pickle and copy.
"""

from __future__ import annotations

TYPE_CHECKING = False  # set without importing typing: these names serve annotations only
if TYPE_CHECKING:
    from typing import Any, Self


class Frozen:
    """Base of the small immutable records (see the module's docstring): fields in
    ``__match_args__``, set once with ``_set``; ``replace(**changes)`` returns a changed copy."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _set(self, *values: Any) -> None:
        """Set every field once, in ``__match_args__`` order (from ``__init__``)."""
        for name, value in zip(self.__match_args__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def replace(self, **changes: Any) -> Self:
        """A copy with the named fields changed (like ``dataclasses.replace``)."""
        unknown = sorted(set(changes) - set(self.__match_args__))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}")
        values = {name: getattr(self, name) for name in self.__match_args__}
        values.update(changes)
        return type(self)(**values)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild through __init__: their default would assign the slots.
        return (type(self), self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__)
        return f"{type(self).__name__}({fields})"
