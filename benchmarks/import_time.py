"""Time ``import dcasenet_hub`` in fresh processes (median of N): the package's import must stay fast and lazy.

    python -m benchmarks.import_time [--runs 15]

Prints the minimum / median / maximum seconds and the heavy modules the import pulled in (should be none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CODE = (
    "import sys, time; t = time.perf_counter(); import dcasenet_hub; dt = time.perf_counter() - t;"
    "heavy = [m for m in ('torch', 'numpy', 'huggingface_hub', 'soundfile', 'safetensors') if m in sys.modules];"
    "print(repr(dt), ','.join(heavy))"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    times, heavy = [], set()
    for _ in range(a.runs):
        out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        heavy.update(m for m in (out[1].split(",") if len(out) > 1 else []) if m)
    print(f"import dcasenet_hub: min {min(times) * 1e3:.1f} ms, median {statistics.median(times) * 1e3:.1f} ms, "
          f"max {max(times) * 1e3:.1f} ms over {a.runs} runs; heavy modules imported: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
