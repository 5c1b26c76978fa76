"""The processes torchrun starts stop when torchrun itself is gone.

torchrun stops its workers when it is asked to (SIGINT, SIGTERM), but a torchrun killed outright (SIGKILL, the
out-of-memory killer, a lost node) leaves them running: a worker waiting at a barrier for a peer that will never come
would wait for the process group's timeout (hours). :func:`exit_with_parent` makes a worker end soon after its
parent does.

Example:
    >>> exit_with_parent(interval_s=60.0)  # doctest: +SKIP  (a daemon thread; returns at once)
"""

from __future__ import annotations

import logging
import os
import threading
import time

from dcasenet_hub import _env

logger = logging.getLogger(__name__)

#: How often a worker looks whether its parent is still there.
PARENT_CHECK_S = 2.0

_watching: set[int] = set()  # the pids whose parent is watched, so each process starts one thread


def exit_with_parent(*, interval_s: float = PARENT_CHECK_S) -> None:
    """End this process (exit status 1) when the torchrun agent that started it is gone (nothing elsewhere).

    A daemon thread compares ``os.getppid()`` with the parent at the call every ``interval_s`` seconds; an orphan is
    adopted by another process, so its parent id changes. The process then exits at once (``os._exit``): its
    outputs are written atomically, so at most the files in flight are lost, as with any kill.
    """
    # only under torchrun's agent, whose workers are its children: another launcher may detach on purpose
    if os.getpid() in _watching or not _env.started_by_torchrun():
        return
    _watching.add(os.getpid())
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                logger.error("The process that started this one (pid %d) is gone; stopping", parent)
                logging.shutdown()
                os._exit(1)

    threading.Thread(target=watch, name="dcasenet-hub-parent-watch", daemon=True).start()


__all__ = ["PARENT_CHECK_S", "exit_with_parent"]
