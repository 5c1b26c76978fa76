"""int8 against fp32 on the CPU, end to end on the same files: speed and agreement.

    python -m benchmarks.int8 [--files 32] [--rounds 3] [--out results.json]

* **files**: ``--files`` 10 s WAV files at 44.1 kHz, each a mixture of 1-3 of the 80 tag classes' synthetic sounds
  (``train.minidata.class_sound``: tone, harmonic or noise band at a class frequency with a class rhythm) over noise,
  seeded; the mixture's classes are the tag labels for mAP. No real recordings ship with the repository.
* **weights**: the responsive test weights of ``tests/helpers.py`` (batch-norm statistics of real-ish signals, heads
  scaled so outputs spread), so that agreement numbers mean something. Not trained: the tag mAPs are near chance;
  their difference says how much int8 changes the ranking of the tag scores.
* **speed**: ``embed`` over all files (one call each, batch 8, 2 decode workers) for torch fp32, onnxruntime fp32 and
  ``dtype="int8"`` (:func:`dcasenet_hub.export.quantize.quantize_int8`'s graph on onnxruntime), and bf16 where the
  CPU has native bf16, interleaved for ``--rounds``; audio seconds per second, per-round ratios. Runners are built
  before timing, into an empty package cache (the one-time export and quantization are reported separately).
* **agreement** (int8 against torch fp32): clip-embedding cosine, scene top-1 agreement of ``predict``, tag mAP of
  both, largest tag/scene probability difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def make_files(folder: Path, n: int, *, seed: int = 0) -> tuple[list[str], Any]:
    import numpy as np
    import soundfile as sf

    from dcasenet_hub.train.minidata import class_sound

    rng = np.random.default_rng(seed)
    sr, n_classes = 44100, 80
    labels = np.zeros((n, n_classes), dtype=np.int64)
    paths = []
    for i in range(n):
        x = 0.01 * rng.standard_normal(10 * sr)
        for c in rng.choice(n_classes, size=int(rng.integers(1, 4)), replace=False):
            x += rng.uniform(0.1, 0.4) * class_sound(int(c), n_classes, 10 * sr, sr, rng)
            labels[i, c] = 1
        path = folder / f"mix{i:03d}.wav"
        sf.write(path, (x / max(1.0, float(np.abs(x).max()) / 0.9)).astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(path))
    return paths, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import responsive_model

    from dcasenet_hub.devices import cpu_info, native_cpu_bf16
    from dcasenet_hub.inference import embed, inference_runner, predict
    from dcasenet_hub.metrics.tagging import mean_average_precision

    cache = tempfile.TemporaryDirectory(prefix="dcasenet-bench-cache-")
    os.environ["DCASENET_HUB_CACHE"] = cache.name  # read when the runners are built: no graph from earlier runs
    model = responsive_model("v3").eval()
    # every variant through the public options, on the same model
    variants = {"fp32 torch": {}, "fp32 onnxruntime": {"backend": "onnxruntime"}, "int8": {"dtype": "int8"}}
    if native_cpu_bf16():
        variants["bf16 torch"] = {"dtype": "bf16"}
    build = {}
    for name, kw in variants.items():  # the one-time cost: optimised copy, export, quantization (empty cache)
        t0 = time.perf_counter()
        inference_runner(model, device="cpu", **kw)
        build[name] = time.perf_counter() - t0
    print("runners built: " + ", ".join(f"{n} {s:.1f} s" for n, s in build.items()), flush=True)
    runs = {n: (model, kw) for n, kw in variants.items()}
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = make_files(Path(tmp), args.files)
        audio_s = 10.0 * len(paths)
        times: dict[str, list[float]] = {n: [] for n in variants}
        clips: dict[str, Any] = {}
        for name, (net, kw) in runs.items():  # warm-up on one file
            embed(net, paths[:1], batch_size=8, workers=2, **kw)
        for r in range(args.rounds):
            for name, (net, kw) in runs.items():
                t0 = time.perf_counter()
                out = embed(net, paths, batch_size=8, workers=2, **kw)
                times[name].append(time.perf_counter() - t0)
                clips[name] = np.stack([e.clip for e in out])
            print(f"round {r + 1}: " + ", ".join(f"{n} {audio_s / times[n][-1]:.1f}" for n in variants), flush=True)
        preds = {name: predict(runs[name][0], paths, batch_size=8, workers=2, **runs[name][1])
                 for name in ("fp32 torch", "int8")}
    a, b = clips["fp32 torch"], clips["int8"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    p32, p8 = preds["fp32 torch"], preds["int8"]
    agree = float(np.mean([x.top_scene == y.top_scene for x, y in zip(p32, p8)]))
    tags32, tags8 = np.stack([p.tag_probs for p in p32]), np.stack([p.tag_probs for p in p8])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "files": len(paths), "rounds": args.rounds,
        "command": "python -m benchmarks.int8 " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runner_build_s": build,
        "audio_s_per_s": {n: [audio_s / t for t in ts] for n, ts in times.items()},
        "median_audio_s_per_s": {n: audio_s / statistics.median(ts) for n, ts in times.items()},
        "int8_over_fp32_onnxruntime": statistics.median(
            [x / y for x, y in zip(times["fp32 onnxruntime"], times["int8"])]),
        "int8_over_fp32_torch": statistics.median([x / y for x, y in zip(times["fp32 torch"], times["int8"])]),
        "int8_over_fp32_torch_per_round": [x / y for x, y in zip(times["fp32 torch"], times["int8"])],
        "clip_cosine_min": float(cos.min()), "clip_cosine_mean": float(cos.mean()),
        "scene_top1_agreement": agree,
        "tag_map_fp32": mean_average_precision(labels, tags32), "tag_map_int8": mean_average_precision(labels, tags8),
        "tag_prob_max_abs_diff": float(np.abs(tags32 - tags8).max()),
        "scene_prob_max_abs_diff": float(max(np.abs(x.scene_probs - y.scene_probs).max() for x, y in zip(p32, p8))),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
