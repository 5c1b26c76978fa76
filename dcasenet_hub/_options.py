"""One rule for option dataclasses (``FinetuneOptions``, ``BatchOptions``): an options object plus keyword overrides.

Both ``finetune(model, data, options=None, **overrides)`` and ``batch.run(..., options=None, **overrides)`` merge
through :func:`merge_options`, so a misspelt option gives the same one-line ``TypeError`` naming the known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from dcasenet_hub.errors import OptionsError

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


def option(default: Any, doc: str, allowed: str, records: tuple[str, ...] = ()) -> Any:
    """A dataclass field declaring one option: its default, one line of doc, what it allows (shown by
    :meth:`DeclaredOptions.describe` and appended to the class docstring by :func:`document`) and which result
    files record it (inference options)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "allowed": allowed, "records": records})


def options_error(option: str, value: object, allowed: str) -> OptionsError:
    """The one form of a rejected option value: ``threshold=1.5: must be a probability between 0 and 1``.

    Every options check (:class:`~dcasenet_hub.inference.InferenceOptions`, ``BatchOptions``, ``score``, ``--opset``,
    ``--shard``) words its error this way, so
    the command line can show the same line with the flag (``--threshold 1.5: must be ...``).

    Example:
        >>> str(options_error("threshold", 1.5, "must be a probability between 0 and 1"))
        'threshold=1.5: must be a probability between 0 and 1'
    """
    return OptionsError(f"{option}={value!r}: {allowed}")


class Unset:
    """The default of a keyword override: "not given; the value comes from ``options``". Its repr is the option's
    own default (:meth:`DeclaredOptions.unset`), so ``help()`` shows what a call without ``options`` gets."""

    __slots__ = ("shown",)

    def __init__(self, shown: str) -> None:
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown


class DeclaredOptions:
    """Methods every options dataclass whose fields are declared with :func:`option` shares."""

    @classmethod
    def unset(cls, name: str) -> Any:
        """The signature default of the keyword override ``name``: not given, shown as the option's default."""
        return Unset(repr(cls.describe()[name][0]))

    @classmethod
    def given(cls, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The option names among ``arguments`` (a call's ``locals()``) that the call gave (not :class:`Unset`)."""
        names = set(option_names(cls))
        return {k: v for k, v in arguments.items() if k in names and not isinstance(v, Unset)}

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return option_names(cls)

    @classmethod
    def describe(cls) -> dict[str, tuple[Any, str, str]]:
        """``{name: (default, doc, allowed)}`` of every option, in declaration order."""
        return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default,  # type: ignore[misc]
                         f.metadata["doc"], f.metadata["allowed"]) for f in dataclasses.fields(cls)}

    @classmethod
    def merge(cls: type[T], options: T | None, overrides: Mapping[str, Any], *, caller: str) -> T:
        """``options`` (default: all defaults) with ``overrides`` (option names as keywords) applied over it
        (:func:`merge_options`)."""
        return merge_options(cls, options, overrides, caller=caller)

    @classmethod
    def allowed(cls, name: str) -> str:
        """What option ``name`` allows, as its declaration words it."""
        return next(f.metadata["allowed"] for f in dataclasses.fields(cls) if f.name == name)


def document(cls: type[T]) -> type[T]:
    """Append an ``Attributes:`` section listing every declared option to ``cls``'s docstring (a class decorator,
    applied above ``@dataclass``)."""
    cls.__doc__ = (cls.__doc__ or "") + "\n    Attributes:\n" + "".join(
        f"        {name}: {doc}; {allowed}. Default {_shown(default)}.\n"
        for name, (default, doc, allowed) in cls.describe().items())  # type: ignore[attr-defined]
    return cls


def _shown(default: Any) -> str:
    """A default as the docstring shows it: an options object left at its defaults as ``Name()``."""
    if dataclasses.is_dataclass(default) and not isinstance(default, type) and default == type(default)():
        return f"{type(default).__name__}()"
    return repr(default)
