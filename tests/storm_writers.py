"""Writers of one output folder started at once and SIGKILLed at random instants (tests/test_output_folder_storm.py).

``python tests/storm_writers.py SPEC.json``; the spec holds ``rounds``: a list of rounds, each a list of writers
``{"cwd": ..., "args": [...], "kill_after_s": float | null}``. This process imports the package once and forks one
child per writer (each child is a separate process running ``dcasenet_hub.cli.main(args)`` in its own working
directory, with one torch thread), so a round costs no interpreter start; the parent sends SIGKILL to each child at
its instant, from outside. It prints one JSON line per round: each writer's exit status (``"killed"`` or the code).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _child(cwd: str, args: list[str]) -> None:
    code = 70
    try:
        import torch

        torch.set_num_threads(1)
        os.chdir(cwd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        from dcasenet_hub.cli.main import main

        code = main(args)
    finally:
        os._exit(code)


def main() -> None:
    import dcasenet_hub.cli.main  # noqa: F401  (imported once, before forking: torch, numpy, the package)

    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    for round_ in spec["rounds"]:
        start = time.monotonic()
        pids = []
        for w in round_:
            pid = os.fork()
            if pid == 0:
                _child(w["cwd"], w["args"])
            pids.append(pid)
        status: dict[int, str | int] = {}
        kills = sorted((w["kill_after_s"], pid) for w, pid in zip(round_, pids) if w["kill_after_s"] is not None)
        for when, pid in kills:
            time.sleep(max(0.0, start + when - time.monotonic()))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            _, st = os.waitpid(pid, 0)
            status[pid] = "killed" if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)
        print(json.dumps([status[p] for p in pids]), flush=True)


if __name__ == "__main__":
    main()
