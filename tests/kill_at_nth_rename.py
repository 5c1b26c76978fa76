"""Run the dcasenet-hub command line in this process and SIGKILL it at the N-th file rename (fault injection).

The library holds no test hooks: this wrapper replaces ``os.replace`` and ``os.rename`` from outside, counts every
call of either in this process, and kills the process with SIGKILL right before (``before``) or right after
(``after``) the N-th one. Tests run it as a child process and iterate N until the command finishes.

Usage::

    python tests/kill_at_nth_rename.py N before|after ARGS...     # ARGS as for `dcasenet-hub`
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _wrap(real: Callable[..., Any], nth: int, when: str, count: list[int]) -> Callable[..., Any]:
    def renamed(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if count[0] == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return renamed


def main() -> int:
    nth, when, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if when not in ("before", "after"):
        raise SystemExit("usage: kill_at_nth_rename.py N before|after ARGS...")
    from dcasenet_hub.cli.main import main as cli  # imported first: only the command's own renames count

    count = [0]
    os.replace = _wrap(os.replace, nth, when, count)
    os.rename = _wrap(os.rename, nth, when, count)
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
