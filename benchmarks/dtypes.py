"""Precision choices side by side: fp32 (exact), fp32 with TF32 (CUDA), bf16 and fp16 autocast.

    python -m benchmarks.dtypes [--device cuda|cpu] [--files 24] [--out results.json]

* **model**: v3 model-only audio seconds per second (median of 5 timed calls after 2 warm-ups, interleaved) at
  16 x 5 s and 16 x 60 s, and each variant's max |difference| from exact fp32 relative to the output's scale.
* **e2e**: ``dcasenet_hub.inference.pipeline.embed`` and ``predict`` over ``--files`` 10-s 44.1 kHz WAV files (one list call,
  batch 16), audio seconds per second per precision, with the clip-embedding cosine and scene top-1 agreement
  against fp32.

Weights: the responsive test weights of ``tests/helpers.py`` (batch-norm statistics of real-ish signals, heads
scaled), so that agreement numbers mean something; speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _variants(device: Any) -> dict[str, dict[str, Any]]:
    out = {"fp32": {"dtype": None}}
    if device.type == "cuda":
        out["fp32+tf32"] = {"dtype": None, "tf32": True}
        out["fp16"] = {"dtype": "fp16"}
    out["bf16"] = {"dtype": "bf16"}
    return out


def bench_model(model: Any, device: Any) -> list[dict[str, Any]]:
    import torch

    from dcasenet_hub.models.fast import optimize_for_inference

    rows = []
    fe = model.config.frontend
    runners = {name: optimize_for_inference(model, device=device, **kw) for name, kw in _variants(device).items()}
    for batch, seconds in ((16, 5.0), (16, 60.0)):
        frames = fe.num_frames(round(seconds * fe.sample_rate) + 1)
        x = torch.randn(batch, 1, fe.n_mels, frames, generator=torch.Generator().manual_seed(0)).to(device)
        outs = {name: r(x).to_dict() for name, r in runners.items()}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for name, r in runners.items():  # warm-up
            r(x)
        for _ in range(5):
            for name, r in runners.items():
                _sync(device)
                t = time.perf_counter()
                r(x)
                _sync(device)
                times[name].append(time.perf_counter() - t)
        ref = outs["fp32"]
        for name in runners:
            diff = max(float((outs[name][k] - ref[k]).abs().max()) / max(1.0, float(ref[k].abs().max()))
                       for k in ("scene_logits", "tag_logits", "event_probs", "clip_embeddings"))
            med = statistics.median(times[name])
            rows.append({"batch": batch, "seconds": seconds, "variant": name, "median_s": med,
                         "audio_s_per_s": batch * seconds / med, "max_rel_diff_vs_fp32": diff})
    return rows


def bench_e2e(model: Any, device: Any, n_files: int) -> list[dict[str, Any]]:
    import numpy as np
    import soundfile as sf

    from dcasenet_hub.inference.pipeline import embed, predict

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        rng = np.random.default_rng(0)
        t = np.arange(441000) / 44100
        for i in range(n_files):
            f0 = 200 * (1 + i % 7)
            x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * f0 * t) * (t % (1 + i % 3) < 0.5)
            path = Path(tmp) / f"clip{i:03d}.wav"
            sf.write(path, x.astype(np.float32), 44100, subtype="PCM_16")
            files.append(path)
        audio_s = 10.0 * n_files
        ref_emb = ref_pred = None
        for name, kw in _variants(device).items():
            if kw.get("tf32"):
                continue  # the API path runs exact fp32; TF32 is an optimize_for_inference option
            dtype = kw["dtype"]
            embed(model, files[:2], device=device, dtype=dtype, batch_size=16, progress=False)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            emb = embed(model, files, device=device, dtype=dtype, batch_size=16, progress=False)
            _sync(device)
            t1 = time.perf_counter()
            pred = predict(model, files, device=device, dtype=dtype, batch_size=16, progress=False)
            _sync(device)
            t2 = time.perf_counter()
            if ref_emb is None:
                ref_emb, ref_pred = emb, pred
            cos = [float(a.clip @ b.clip / (np.linalg.norm(a.clip) * np.linalg.norm(b.clip)))
                   for a, b in zip(emb, ref_emb)]
            rows.append({"variant": name, "files": n_files,
                         "embed_audio_s_per_s": audio_s / (t1 - t0), "predict_audio_s_per_s": audio_s / (t2 - t1),
                         "clip_cosine_min": min(cos),
                         "scene_top1_agreement": float(np.mean([a.top_scene == b.top_scene
                                                                for a, b in zip(pred, ref_pred)])),
                         "tag_max_abs_diff": float(max(np.abs(a.tag_probs - b.tag_probs).max()
                                                       for a, b in zip(pred, ref_pred))),
                         "event_frame_agreement": float(np.mean([((a.event_probs > 0.5) == (b.event_probs > 0.5))
                                                                 .mean() for a, b in zip(pred, ref_pred)]))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--sections", nargs="+", default=["model", "e2e"], choices=["model", "e2e"])
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import responsive_model

    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    model = responsive_model("v3").eval().to(device)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    res: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or next((ln.split(":", 1)[1].strip() for ln in flags.splitlines()
                                                         if ln.startswith("model name")), "?"),
                    "native_bf16": sorted({f for f in ("amx_bf16", "avx512_bf16") if f in flags}),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}}
    if "model" in a.sections:
        res["model"] = bench_model(model, device)
        for r in res["model"]:
            print(f"model {r['batch']} x {r['seconds']:g} s {r['variant']:10s} {r['audio_s_per_s']:10.1f} audio s/s"
                  f"  max rel diff {r['max_rel_diff_vs_fp32']:.2e}", flush=True)
    if "e2e" in a.sections:
        res["e2e"] = bench_e2e(model, device, a.files)
        for r in res["e2e"]:
            print(f"e2e {r['variant']:6s} embed {r['embed_audio_s_per_s']:8.1f} predict {r['predict_audio_s_per_s']:8.1f}"
                  f" audio s/s; clip cos min {r['clip_cosine_min']:.5f}, scene top-1 agree "
                  f"{r['scene_top1_agreement']:.3f}, tag max diff {r['tag_max_abs_diff']:.2e}, event frames agree "
                  f"{r['event_frame_agreement']:.4f}", flush=True)
    print(json.dumps(res["machine"]))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
