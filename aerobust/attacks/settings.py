"""Optimizer settings as objects: one small frozen dataclass per optimizer, checked field by field.

An optimizer declares the options it reads as a subclass of :class:`OptimizerSettings` whose
fields are made with :func:`setting` (a default and a check that converts the user's value or
refuses it with one line). :class:`aerobust.attacks.Attack` holds the one settings object of the
optimizer it runs; configs record ``as_config()``, in field order.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

from ..errors import AerobustError
from ..threat import NORMS

Check = Callable[[str, Any], Any]  # (option name, value) -> the converted value; raises AerobustError


def whole_number(minimum: int) -> Check:
    """An int of at least ``minimum``; whole floats (50.0) count, bools and fractions do not."""
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
                or int(value) < minimum:
            raise AerobustError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
        return int(value)
    return check


def optional_whole_number(minimum: int) -> Check:
    """None, or a whole number of at least ``minimum``."""
    whole = whole_number(minimum)
    return lambda name, value: None if value is None else whole(name, value)


def finite_number(minimum: float, *, inclusive: bool, meaning: str = "") -> Check:
    """A finite float above ``minimum`` (or at least it, when ``inclusive``); ``meaning`` explains the unit."""
    def check(name, value):
        bound = f"{'>=' if inclusive else '>'} {minimum:g}{meaning}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < minimum or (value == minimum and not inclusive):
            raise AerobustError(f"{name} must be a finite number {bound}, got {value!r}")
        return float(value)
    return check


def one_of(choices) -> Check:
    def check(name, value):
        if value not in choices:
            raise AerobustError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
        return value
    return check


def flag(name, value) -> bool:
    return bool(value)


def setting(default: Any, check: Check):
    """A settings field: its default and the check every given value passes through."""
    return dataclasses.field(default=default, metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """Base of every optimizer's settings; with no fields it is the settings of an optimizer that takes none."""

    # The threat norms the optimizer is defined for.
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, field.metadata["check"](field.name, getattr(self, field.name)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    def as_config(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}
