"""Run one command and print its wall time, peak RSS and exit code as JSON (stdlib only, so it stays small).

The benchmark launches fresh processes through this small launcher rather than directly: a child forked from the
benchmark process itself would report the benchmark's own resident memory as its peak (``ru_maxrss`` counts the
pages it shared with the parent before ``exec``). The launcher's own footprint (about 10 MiB) is the floor.

Usage: ``python -m benchmarks._child CMD [ARG ...]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    cmd = sys.argv[1:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0,
                      "returncode": os.waitstatus_to_exitcode(status),
                      "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                      "stderr_tail": err.decode(errors="replace")[-2000:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
