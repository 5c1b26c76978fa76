"""Run the ``dcasenet-hub`` command line and SIGKILL it at its N-th ``os.replace``: fault injection from the test
side (the package holds no hooks). ``python tests/kill_at_rename.py BEFORE|AFTER N ARGS...``; a kill BEFORE leaves
the complete, fsync'd temporary file of that rename behind."""

from __future__ import annotations

import os
import signal
import sys

WHEN, N = sys.argv[1], int(sys.argv[2])
_real_replace = os.replace
_count = 0


def _replace(src, dst, **kwargs):  # type: ignore[no-untyped-def]
    global _count
    _count += 1
    if WHEN == "BEFORE" and _count == N:
        os.kill(os.getpid(), signal.SIGKILL)
    _real_replace(src, dst, **kwargs)
    if WHEN == "AFTER" and _count == N:
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = _replace

from dcasenet_hub.cli.main import main

sys.exit(main(sys.argv[3:]))
