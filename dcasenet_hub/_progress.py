"""Progress bars: one helper for every loop that shows one (inference, fine-tuning, training, data preparation).

Example:
    >>> from dcasenet_hub._progress import progress_bar
    >>> with progress_bar(total=3, enabled=False) as bar:
    ...     bar.update(3)
    >>> list(progress_bar(range(2), enabled=False))
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def show_progress(progress: bool | None) -> bool:
    """``progress``; for ``None`` (the default everywhere), whether stderr is a terminal (bars in a log are noise).

    Example:
        >>> show_progress(False), show_progress(True)
        (False, True)
    """
    if progress is not None:
        return bool(progress)
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool, leave: bool = False, **kwargs: Any) -> Any:
    """A ``tqdm.auto`` bar over ``iterable`` (or updated by hand), or a silent stand-in when not ``enabled``.

    The stand-in keeps tqdm unimported when nothing is shown. Bars are removed when done unless ``leave``.
    """
    if not enabled:
        return _Silent(iterable)
    import sys

    from tqdm.auto import tqdm

    from dcasenet_hub._io import fail_safe

    # a closed or broken stderr (`... 2>&1 | head`) must not stop the work the bar reports on
    return tqdm(iterable, leave=leave, file=fail_safe(kwargs.pop("file", None) or sys.stderr), **kwargs)


class _Silent:
    """What the loops use of a tqdm bar, doing nothing."""

    def __init__(self, iterable: Iterable[Any] | None) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
