"""Throughput of ``embed`` per timestamp hop: audio seconds per second, v3, fp32, CPU.

Runs :func:`dcasenet_hub.inference.pipeline.embed` on one generated clip at every allowed hop and prints a Markdown table
(wall and process CPU time, audio seconds per wall second and per CPU second, forward passes, frames). Also times
:func:`dcasenet_hub.hear.get_timestamp_embeddings` on the same clip at 48 kHz for the hops given with ``--hear``.

Usage: ``python -m benchmarks.hop_throughput [--seconds 60] [--threads 1] [--repeats 1] [--hear 0.1 0.04]``
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--hops", type=float, nargs="*", default=None)
    ap.add_argument("--hear", type=float, nargs="*", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from dcasenet_hub import build_model, hear
    from dcasenet_hub.inference.pipeline import allowed_hops, embed

    model = build_model("v3", seed=0).eval()
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(round(args.seconds * 24000))).astype(np.float32)
    embed(model, wav[:24000 * 5], sample_rate=24000)  # warm-up (builds the cached fast runner)
    print(f"CPU: {_cpu_name()}; torch {torch.__version__}, {args.threads} thread(s); {args.seconds:g} s clip, "
          f"best of {args.repeats}")
    print("| hop (s) | passes | frames | wall s | CPU s | audio s / wall s | audio s / CPU s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for hop in sorted(args.hops or allowed_hops(), reverse=True):
        wall, cpu, emb = _timed(lambda: embed(model, wav, sample_rate=24000, hop=hop, workers=0), args.repeats)
        print(f"| {hop:g} | {round(0.8 / hop)} | {emb.frame.shape[0]} | {wall:.2f} | {cpu:.2f} | "
              f"{args.seconds / wall:.1f} | {args.seconds / cpu:.1f} |", flush=True)
    if args.hear:
        hm = hear.HearModel(model)
        audio = torch.from_numpy(rng.uniform(-1, 1, (1, round(args.seconds * hear.SAMPLE_RATE))).astype(np.float32))
        print()
        print("| HEAR get_timestamp_embeddings, hop (s) | timestamps | wall s | CPU s | audio s / wall s |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for hop in args.hear:
            hm.hop_s = hop
            wall, cpu, out = _timed(lambda: hear.get_timestamp_embeddings(audio, hm), args.repeats)
            print(f"| {hop:g} | {out[1].shape[1]} | {wall:.2f} | {cpu:.2f} | {args.seconds / wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
