"""One rule for option dataclasses (``FinetuneOptions``, ``BatchOptions``): an options object plus keyword overrides.

Both ``finetune(model, data, options=None, **overrides)`` and ``batch.run(..., options=None, **overrides)`` merge
through :func:`merge_options`, so a misspelt option gives the same one-line ``TypeError`` naming the known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def option_names(cls: type) -> tuple[str, ...]:
    """The option names of an options dataclass, in declaration order (its classes' ``field_names()``)."""
    return tuple(f.name for f in dataclasses.fields(cls))


def merge_options(cls: type[T], options: T | None, overrides: Mapping[str, Any], *, caller: str) -> T:
    """``options`` (default: ``cls()``) with ``overrides`` (option names as keywords) applied over it.

    Args:
        cls: The options dataclass (frozen; it checks values when built; its ``field_names()``, if it has one,
            lists the names it takes).
        options: An instance of ``cls``, or ``None``.
        overrides: Option names and values; they win over ``options``.
        caller: The function named in a ``TypeError`` (e.g. ``"finetune"``).

    Raises:
        TypeError: ``options`` is not a ``cls``, or an override is not an option name (the message lists the known
            ones).
        ValueError: an invalid value (from ``cls``).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Opts:
        ...     epochs: int = 1
        >>> merge_options(Opts, None, {"epochs": 3}, caller="fit").epochs
        3
    """
    name = cls.__name__
    if options is not None and not isinstance(options, cls):
        raise TypeError(f"{caller}(): options must be a {name}, got {type(options).__name__}; pass options as "
                        f"keywords or as {name}(...)")
    known = cls.field_names() if hasattr(cls, "field_names") else option_names(cls)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"{caller}() got unknown option(s) {', '.join(map(repr, unknown))}. Known: {', '.join(known)}")
    base = options if options is not None else cls()
    return dataclasses.replace(base, **overrides) if overrides else base  # type: ignore[type-var]
