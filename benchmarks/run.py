"""dcasenet-hub benchmark: model-only throughput against the authors' way, end-to-end embed, start-up, memory.

Run from the repository root::

    python -m benchmarks.run                 # full table, about 6-9 minutes on 2 CPU cores
    python -m benchmarks.run --smoke         # tiny sizes, well under a minute (CI: checks that it runs, not speed)
    python -m benchmarks.run --sections model e2e --out results.json

Sections (docs/performance.md explains every column):

* ``matmul``: fp32 matrix-multiply GFLOP/s, the machine's practical ceiling (measured before and after the models).
* ``model``: seconds of audio per second for v1, v2, v3 at batch 1 and 16 on 5 s and 60 s inputs. Variants run
  interleaved (A B A B ...) so both see the same load: ``naive`` = the authors' evaluation (one forward per task,
  scene/tags/events, each recomputing the trunk; fp32; NCHW; ``torch.no_grad`` as their trainer.py), ``one pass`` =
  every head in one forward (plain model, no_grad), ``fast`` = :func:`dcasenet_hub.models.fast.optimize_for_inference`
  (the default path), plus bf16 / onnxruntime on selected cells. Each variant's outputs are compared with the
  naive ones (``max |diff|``). Achieved GFLOP/s = FLOPs of one forward (torch.utils.flop_counter) / time.
* ``e2e``: ``dcasenet-hub embed`` (in-process CLI) over a folder of 10 s 44.1 kHz WAV files, with per-stage times
  from timers wrapped around the package's stage functions (decode, resample, features, network, writes), against
  the model-only throughput of the same batches.
* ``startup``: fresh-process wall time of ``import dcasenet_hub``, ``dcasenet-hub --help`` and import + load of a
  saved model folder; peak RSS of each.
* ``long``: ``dcasenet-hub embed`` of one 1 h file (and a 5 min file) in a fresh process: wall time and peak RSS.

Weights are random (seeded): speed does not depend on their values. Results go to stdout (Markdown tables) and to a
JSON file (``--out``; default ``benchmarks/results/<device>-<UTC time>.json``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NAIVE_TASKS = (("scene",), ("tags",), ("events",))


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "device": str(device),
        "loadavg_start": _loadavg(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu_model"] = fields.get("Model name")
        info["cpu_cores"] = fields.get("CPU(s)")
        info["cpu_flags_avx512"] = "avx512f" in fields.get("Flags", "")
        info["cpu_flags_bf16"] = any(f in fields.get("Flags", "") for f in ("avx512_bf16", "amx_bf16"))
    except (OSError, subprocess.SubprocessError):
        pass
    if getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def _interleaved(fns: dict[str, Callable[[], Any]], *, reps: int, min_reps: int, budget_s: float,
                 device: Any, warmup: bool = True) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time each function once per round, in turn (A B A B ...), after one warm-up call each.

    Returns the times and each function's first output (the warm-up's, or the first timed run's without warm-up),
    so the outputs can be checked without extra runs. Stops after ``min_reps`` rounds once ``budget_s`` is spent.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    outputs: dict[str, Any] = {}
    if warmup:
        for name, fn in fns.items():
            outputs[name] = fn()
            _sync(device)
    start = time.perf_counter()
    for r in range(reps):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            outputs.setdefault(name, out)
            del out
        if r + 1 >= min_reps and time.perf_counter() - start > budget_s:
            break
    return times, outputs


def _max_diff(ref: dict[str, Any], out: dict[str, Any]) -> float:
    worst = 0.0
    for k, v in ref.items():
        if k in out and out[k] is not None:
            worst = max(worst, float((out[k].float().cpu() - v.float().cpu()).abs().max()))
    return worst


# ----------------------------------------------------------------------------------------------------------------
# matmul ceiling
# ----------------------------------------------------------------------------------------------------------------


def bench_matmul(device: Any, *, n: int, reps: int) -> dict[str, Any]:
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = _interleaved({"mm": lambda: a @ b}, reps=reps, min_reps=reps, budget_s=1e9, device=device)[0]["mm"]
    t = _median(times)
    return {"n": n, "seconds": t, "gflops": 2 * n**3 / t / 1e9, "runs": len(times),
            "gflops_min_max": [2 * n**3 / max(times) / 1e9, 2 * n**3 / min(times) / 1e9]}


# ----------------------------------------------------------------------------------------------------------------
# model-only
# ----------------------------------------------------------------------------------------------------------------


def _flops(model: Any, frames: int, passes: tuple[tuple[str, ...] | None, ...] = (None,)) -> float:
    """FLOPs of batch 1 through ``passes`` (one forward per entry; None = all heads), counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta")
    x = torch.empty(1, 1, model.config.frontend.n_mels, frames, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for tasks in passes:
            meta(x, tasks=tasks)
    return float(counter.get_total_flops())


def _naive(model: Any, x: Any) -> dict[str, Any]:
    """The authors' evaluation: one forward per task under no_grad (their trainer.py), plain fp32 model."""
    import torch

    out: dict[str, Any] = {}
    with torch.no_grad():
        for tasks in NAIVE_TASKS:
            o = model(x, tasks=tasks)
            for k in ("scene_logits", "tag_logits", "event_probs"):
                if getattr(o, k) is not None:
                    out[k] = getattr(o, k)
    return out


def bench_model(device: Any, *, archs: tuple[str, ...], cells: list[tuple[int, float]], extra_cells: set,
                low_cells: set, big_cells: set, onnx_dir: Path | None, smoke: bool) -> list[dict[str, Any]]:
    import torch

    from dcasenet_hub import build_model
    from dcasenet_hub.models.fast import optimize_for_inference

    rows: list[dict[str, Any]] = []
    sessions: dict[str, Any] = {}
    for arch in archs:
        model = build_model(arch, seed=0).eval().to(device)
        fast = optimize_for_inference(model)
        fe = model.config.frontend
        for batch, seconds in cells:
            frames = fe.num_frames(round(seconds * fe.sample_rate) + 1)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 1, fe.n_mels, frames, generator=gen).to(device)
            big = (arch, batch, seconds) in big_cells
            variants: dict[str, Callable[[], Any]] = {
                "naive": lambda m=model, x=x: _naive(m, x),
                "one pass": lambda m=model, x=x: _no_grad_call(m, x),
                "fast": lambda m=fast, x=x: m(x),
            }
            if big or arch != "v3":  # the one-pass decomposition is shown for v3; 16 x 60 s: naive vs fast only
                variants.pop("one pass")
            if (arch, batch, seconds) in low_cells:
                low = "fp16 AMP" if device.type == "cuda" else "bf16"
                low_model = optimize_for_inference(model, dtype=torch.float16 if device.type == "cuda" else
                                                   torch.bfloat16)
                variants[low] = lambda m=low_model, x=x: m(x)
            if (arch, batch, seconds) in extra_cells and onnx_dir is not None and device.type == "cpu":
                sess = sessions.get(arch)
                if sess is None:
                    from dcasenet_hub.export.onnx import export_onnx, onnx_session

                    path = export_onnx(model, onnx_dir / f"{arch}.onnx", check=False)
                    sess = sessions[arch] = onnx_session(path)
                variants["onnxruntime"] = lambda s=sess, x=x: _ort(s, x)
            _log(f"model {arch} batch {batch} x {seconds:g} s: {', '.join(variants)}")
            # 16 x 60 s (16 min of audio per call): one timed run each, no warm-up (earlier cells warmed the kernels)
            reps, min_reps, budget = (1, 1, 0.0) if smoke or big else (5, 2, 12.0)
            times, outs = _interleaved(variants, reps=reps, min_reps=min_reps, budget_s=budget, device=device,
                                       warmup=not big)
            ref = outs["naive"]
            diffs = {name: _max_diff(ref, _as_dict(o)) for name, o in outs.items() if name != "naive"}
            del outs
            audio = batch * seconds
            tnaive = times["naive"]
            for name, ts in times.items():
                ratios = [a / b for a, b in zip(tnaive, ts)]
                rows.append({
                    "arch": arch, "batch": batch, "seconds": seconds, "frames": frames, "variant": name,
                    "runs": len(ts), "median_s": _median(ts), "min_s": min(ts), "max_s": max(ts),
                    "audio_s_per_s": audio / _median(ts),
                    "speedup_vs_naive": _median(ratios) if name != "naive" else 1.0,
                    "max_abs_diff_vs_naive": diffs.get(name, 0.0),
                })
        del fast
        gc.collect()
    return rows


def _no_grad_call(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(x)


def _ort(session: Any, x: Any) -> dict[str, Any]:
    import torch

    from dcasenet_hub.export.onnx import run_onnx

    return {k: torch.from_numpy(v) for k, v in run_onnx(session, x).items()}


def _as_dict(out: Any) -> dict[str, Any]:
    if isinstance(out, dict):
        return out
    return {k: v for k, v in out.to_dict().items() if k != "frame_times"}


# ----------------------------------------------------------------------------------------------------------------
# End-to-end
# ----------------------------------------------------------------------------------------------------------------


def _write_wav(path: Path, seconds: float, sr: int, seed: int, *, chunk_s: float = 60.0) -> None:
    """Noise + tones as 16-bit PCM WAV, written in chunks (bounded memory for 1 h files)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = round(seconds * sr)
    freqs = rng.uniform(100, 4000, size=3)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        done = 0
        while done < total:
            n = min(int(chunk_s * sr), total - done)
            t = (np.arange(done, done + n) / sr)[:, None]
            tone = 0.1 * np.sin(2 * np.pi * freqs[None, :] * t).sum(axis=1)
            f.write((0.05 * rng.standard_normal(n) + tone).astype(np.float32))
            done += n


def _saved_model(work: Path, arch: str = "v3") -> Path:
    from dcasenet_hub import build_model
    from dcasenet_hub.hub.api import save_pretrained

    folder = work / f"model-{arch}"
    if not (folder / "config.json").exists():
        save_pretrained(build_model(arch, seed=0).eval(), folder)
    return folder


def bench_e2e(device: Any, work: Path, *, n_files: int, seconds: float, sr: int, smoke: bool, pairs: int = 5,
              workers: int | None = None, cpu_features: bool = False, batch_size: int | None = None
              ) -> dict[str, Any]:
    import torch

    from benchmarks._stages import STAGES, StageTimer, instrument
    from dcasenet_hub import cli
    from dcasenet_hub import from_pretrained
    from dcasenet_hub.models.fast import optimize_for_inference

    audio_dir = work / "e2e_audio"
    audio_dir.mkdir(exist_ok=True)
    for i in range(n_files):
        p = audio_dir / f"clip{i:03d}.wav"
        if not p.exists():
            _write_wav(p, seconds, sr, seed=i)
    model_dir = _saved_model(work)
    out_dir = work / "e2e_out"
    shutil.rmtree(out_dir, ignore_errors=True)
    argv = ["embed", str(audio_dir), "-o", str(out_dir), "--model", str(model_dir), "-q",
            "--device", "cuda" if device.type == "cuda" else "cpu"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    # with the network on a GPU: the GPU front-end (opt-in), unless this measures the default CPU front-end instead
    argv += ["--feature-device", "cpu" if cpu_features else "model"]
    _log(f"e2e: dcasenet-hub {' '.join(argv)}")

    def run_cli() -> tuple[float, StageTimer]:
        shutil.rmtree(out_dir, ignore_errors=True)
        timer = StageTimer()
        with instrument(timer):
            c0, t0 = time.process_time(), time.perf_counter()
            code = cli.main(argv)
            _sync(device)
            wall = time.perf_counter() - t0
        timer.cpu_s = time.process_time() - c0  # every thread of the process, the decode workers included
        if code != 0:
            raise RuntimeError(f"dcasenet-hub embed exited with {code}")
        return wall, timer

    wall, timer = run_cli()  # the first run also finds the batches the network sees
    shapes = list(timer.network_shapes)
    # model-only on exactly the batches the network saw, same model path (fast default) and the plain model
    model = from_pretrained(model_dir).to(device)
    fast = optimize_for_inference(model)
    batches = [(torch.randn(*shape).to(device), tasks) for shape, tasks in shapes]

    def run_fast() -> None:
        for x, tasks in batches:
            fast(x, tasks=tasks)

    def run_plain() -> None:
        with torch.no_grad():
            for x, tasks in batches:
                model(x, tasks=tasks)

    audio = n_files * seconds
    run_fast()
    _sync(device)
    # Each end-to-end run is followed at once by the model-only runs, and the ratio is taken pair by pair: a shared
    # machine's speed drifts by tens of per cent within a minute (docs/performance.md), which a ratio of medians
    # taken minutes apart would mix into the result.
    runs: list[dict[str, float]] = []
    for r in range(1 if smoke else max(1, pairs)):
        if r:
            wall, timer = run_cli()
        load = timer.seconds.get("load", 0.0)
        c0 = time.process_time()
        times, _ = _interleaved({"fast": run_fast}, reps=1, min_reps=1, budget_s=0, device=device, warmup=False)
        fast_cpu = time.process_time() - c0
        plain, _ = _interleaved({"plain": run_plain}, reps=1, min_reps=1, budget_s=0, device=device, warmup=False)
        # CPU seconds of the same pair: how much more work the command does than the network alone. They drift with
        # the machine too (OpenMP threads spin while a sibling is descheduled): 6.3-8.6 s for the same model-only run
        runs.append({"wall_s": wall, "load_s": load, "e2e": audio / (wall - load),
                     "fast": audio / times["fast"][0], "plain": audio / plain["plain"][0],
                     "cpu_s": timer.cpu_s, "fast_cpu_s": fast_cpu, "cpu_ratio": fast_cpu / timer.cpu_s,
                     "network_s": timer.seconds.get("network", 0.0), "fast_s": times["fast"][0],
                     "timer": timer})
    ratios = [x["e2e"] / x["fast"] for x in runs]
    mid = sorted(range(len(runs)), key=lambda k: ratios[k])[len(runs) // 2]  # the run with the median ratio
    timer = runs[mid]["timer"]
    n_out = sum(1 for _ in out_dir.rglob("*.npz"))
    stage_s = {s: timer.seconds.get(s, 0.0) for s in STAGES}
    busy = sum(stage_s.values())
    net_audio = sum(shape[0] for shape, _ in shapes)
    # every batch holds windows of whole files here (10 s files: one window each), so audio = files' duration
    return {
        "files": n_files, "file_seconds": seconds, "file_sample_rate": sr, "outputs_written": n_out,
        "workers": workers, "batch_size": batch_size,
        "features_on": "cpu" if cpu_features or device.type != "cuda" else str(device),
        "wall_s": runs[mid]["wall_s"], "load_s": runs[mid]["load_s"], "audio_s": audio,
        "e2e_audio_s_per_s": runs[mid]["e2e"],
        "model_only_audio_s_per_s": {"fast": runs[mid]["fast"], "plain": runs[mid]["plain"]},
        "e2e_over_model_only_fast": ratios[mid],
        "cpu_work_ratio": _median([x["cpu_ratio"] for x in runs]),
        "pairs": [{k: v for k, v in x.items() if k != "timer"} | {"ratio": q} for x, q in zip(runs, ratios)],
        "stage_seconds": stage_s,
        "stage_share_of_timed": {k: (v / busy if busy else 0.0) for k, v in stage_s.items()},
        "other_s": max(0.0, runs[mid]["wall_s"] - busy),
        "threads_seen": len(timer.threads),
        "network_batches": [list(s) + [list(t) if t else None] for s, t in shapes],
        "network_windows": net_audio,
    }


# ----------------------------------------------------------------------------------------------------------------
# Fresh-process measurements
# ----------------------------------------------------------------------------------------------------------------


def _run_child(cmd: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MiB) and exit code of one fresh process, measured by ``benchmarks._child``."""
    out = subprocess.run([sys.executable, "-m", "benchmarks._child", *cmd], capture_output=True, text=True,
                         cwd=str(ROOT), check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["wall_s"], r["peak_rss_mib"], r["returncode"], r["stderr_tail"]


def _cli_cmd() -> list[str]:
    exe = shutil.which("dcasenet-hub")
    return [exe] if exe else [sys.executable, "-m", "dcasenet_hub.cli"]


def bench_startup(work: Path, *, reps: int, smoke: bool) -> dict[str, Any]:
    model_dir = _saved_model(work)
    cmds = {
        "import torch (reference)": [sys.executable, "-c", "import torch"],
        "import dcasenet_hub": [sys.executable, "-c", "import dcasenet_hub"],
        "dcasenet-hub --help": _cli_cmd() + ["--help"],
        "import + from_pretrained(saved folder)": [
            sys.executable, "-c", f"import dcasenet_hub; dcasenet_hub.from_pretrained({str(model_dir)!r})"],
    }
    if smoke:
        cmds = {k: v for k, v in cmds.items() if k in ("import dcasenet_hub", "dcasenet-hub --help")}
    res: dict[str, Any] = {k: {"wall": [], "rss_mib": []} for k in cmds}
    if not smoke:
        for name, cmd in cmds.items():  # warm the page cache once
            _run_child(cmd)
    for _ in range(reps):
        for name, cmd in cmds.items():
            wall, rss, code, err = _run_child(cmd)
            if code != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err}")
            res[name]["wall"].append(wall)
            res[name]["rss_mib"].append(rss)
    return {k: {"median_s": _median(v["wall"]), "min_s": min(v["wall"]), "max_s": max(v["wall"]),
                "peak_rss_mib": max(v["rss_mib"]), "runs": len(v["wall"])} for k, v in res.items()}


#: The #14 goal: a 1 h file stays under this peak RSS in every dtype/backend.
LONG_RSS_GOAL_MIB = 1024


def _long_precisions(device: Any) -> list[tuple[str, str]]:
    """(dtype, backend) pairs the ``long`` section runs: every dtype the device takes, and onnxruntime on CPU."""
    pairs = [("fp32", "torch"), ("bf16", "torch")]
    if device.type == "cuda":
        pairs.append(("fp16", "torch"))
    elif _has_ort():
        pairs.append(("fp32", "onnxruntime"))
    return pairs


def bench_long(device: Any, work: Path, *, durations: list[float], sr: int,
               precisions: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    model_dir = _saved_model(work)
    rows = []
    for seconds in durations:
        for dtype, backend in precisions or [("fp32", "torch")]:
            rows.append(_long_row(device, work, model_dir, seconds=seconds, sr=sr, dtype=dtype, backend=backend))
        path = work / f"long_{int(seconds)}s.wav"
        if seconds > 600:  # 300 MB: do not keep it
            path.unlink(missing_ok=True)
    return rows


def _long_row(device: Any, work: Path, model_dir: Path, *, seconds: float, sr: int, dtype: str,
              backend: str) -> dict[str, Any]:
    path = work / f"long_{int(seconds)}s.wav"
    if not path.exists():
        _log(f"long: writing {seconds:g} s test file")
        _write_wav(path, seconds, sr, seed=7)
    out = work / f"long_out_{int(seconds)}_{dtype}_{backend}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = _cli_cmd() + ["embed", str(path), "-o", str(out), "--model", str(model_dir), "-q",
                        "--device", "cuda" if device.type == "cuda" else "cpu", "--dtype", dtype,
                        "--backend", backend]
    _log(f"long: dcasenet-hub embed of {seconds:g} s ({dtype}, {backend})")
    wall, rss, code, err = _run_child(cmd)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err}")
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "dtype": dtype, "backend": backend, "wall_s": wall, "peak_rss_mib": rss,
            "audio_s_per_s": seconds / wall, "file_mib": path.stat().st_size / 2**20,
            "under_rss_goal": rss is not None and rss < LONG_RSS_GOAL_MIB}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.{nd}f}"
    return str(x)


def _pairs_text(e: dict[str, Any]) -> str:
    pairs = e.get("pairs") or []
    if len(pairs) < 2:
        return ""
    shown = ", ".join(f"{100 * p['ratio']:.0f}%" for p in pairs)
    return f"; pair by pair {shown} (the median pair is shown)"


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    m = result["machine"]
    lines.append(f"Machine: {m.get('cpu_model')} ({m.get('cpu_cores')} CPUs, torch threads {m['torch_threads']}, "
                 f"{m['cpu_capability']}), device {m['device']}{' ' + m['gpu'] if m.get('gpu') else ''}, "
                 f"torch {m['torch']}, Python {m['python']}, onnxruntime {m.get('onnxruntime')}")
    lines.append(f"Load average (1, 5, 15 min): start {m.get('loadavg_start')}, end {m.get('loadavg_end')}; "
                 f"{m['utc']}; total {_fmt(result.get('total_s'))} s")
    lines.append(f"CPU native bf16 (avx512_bf16 / amx_bf16): {'yes' if m.get('cpu_flags_bf16') else 'no'}")
    peers_res = result.get("peers")
    if peers_res:
        from benchmarks import peers

        lines += ["", peers_res["skipped"] if "skipped" in peers_res else peers.render(peers_res)]
    mm = result.get("matmul")
    if mm:
        lines.append(f"fp32 matmul {mm[0]['n']}^2: " + ", ".join(f"{x['gflops']:.0f}" for x in mm) +
                     " GFLOP/s (before, after the models)")
    rows = result.get("model")
    if rows:
        lines += ["", "Model-only throughput (seconds of audio per second; median of interleaved runs)", "",
                  ("| arch | batch | input | variant | runs | median s | audio s/s | speed-up vs naive "
                   "| GFLOP/s | of matmul | max abs diff |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['arch']} | {r['batch']} | {r['seconds']:g} s | {r['variant']} | {r['runs']} | "
                f"{_fmt(r['median_s'], 3)} | {_fmt(r['audio_s_per_s'], 1)} | {_fmt(r['speedup_vs_naive'])}x | "
                f"{_fmt(r.get('gflops_per_s'), 1)} | {_fmt(r.get('fraction_of_matmul'))} | "
                f"{r['max_abs_diff_vs_naive']:.1e} |")
    e = result.get("e2e")
    if e:
        lines += ["", (f"End-to-end `dcasenet-hub embed`: {e['files']} files x {e['file_seconds']:g} s at "
                       f"{e['file_sample_rate']} Hz, {e['outputs_written']} outputs written, workers "
                       f"{'default' if e.get('workers') is None else e['workers']}, batch size "
                       f"{'default' if e.get('batch_size') is None else e['batch_size']}, features on "
                       f"{e.get('features_on', 'cpu')}"), "",
                  (f"- wall {_fmt(e['wall_s'])} s (model load {_fmt(e['load_s'])} s excluded from throughput): "
                   f"{_fmt(e['e2e_audio_s_per_s'], 1)} audio s/s"),
                  (f"- model-only on the same batches: fast {_fmt(e['model_only_audio_s_per_s']['fast'], 1)}, "
                   f"plain {_fmt(e['model_only_audio_s_per_s']['plain'], 1)} audio s/s -> end-to-end = "
                   f"{100 * e['e2e_over_model_only_fast']:.0f}% of model-only (fast)" + _pairs_text(e)),
                  (f"- CPU seconds: model-only / whole command (model load included) = "
                   f"{100 * e['cpu_work_ratio']:.0f}% (median of the pairs)"
                   if e.get("cpu_work_ratio") else ""),
                  "", "| stage | seconds | share of timed |", "|---|---|---|"]
        for k, v in e["stage_seconds"].items():
            lines.append(f"| {k} | {_fmt(v)} | {100 * e['stage_share_of_timed'][k]:.1f}% |")
        lines.append(f"| other (outside timed stages, wall - timed) | {_fmt(e['other_s'])} | — |")
    s = result.get("startup")
    if s:
        lines += ["", "Start-up (fresh processes)", "", "| command | median s | min–max s | peak RSS MiB |",
                  "|---|---|---|---|"]
        for k, v in s.items():
            lines.append(f"| {k} | {_fmt(v['median_s'])} | {_fmt(v['min_s'])}–{_fmt(v['max_s'])} | "
                         f"{_fmt(v['peak_rss_mib'])} |")
    lg = result.get("long")
    if lg:
        lines += ["", f"Long files (`dcasenet-hub embed FILE`, fresh process; goal: peak RSS < {LONG_RSS_GOAL_MIB} MiB)",
                  "", "| duration | dtype | backend | wall s | audio s/s | peak RSS MiB | goal | file MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in lg:
            goal = "met" if r.get("under_rss_goal") else "NOT met"
            lines.append(f"| {r['seconds'] / 60:g} min | {r.get('dtype', 'fp32')} | {r.get('backend', 'torch')} | "
                         f"{_fmt(r['wall_s'])} | {_fmt(r['audio_s_per_s'], 1)} | {_fmt(r['peak_rss_mib'])} | {goal} | "
                         f"{_fmt(r['file_mib'])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each (checks the harness runs)")
    parser.add_argument("--sections", nargs="+", default=["matmul", "model", "e2e", "startup", "long"],
                        choices=["matmul", "model", "e2e", "startup", "long", "peers"])
    parser.add_argument("--archs", nargs="+", default=["v1", "v2", "v3"], choices=["v1", "v2", "v3"])
    parser.add_argument("--full", action="store_true", help="batch 16 x 60 s for every arch (default: v3 only)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--e2e-files", type=int, default=24, metavar="N",
                        help="10 s files in the e2e section (default 24; more files amortise the command's start-up)")
    parser.add_argument("--e2e-pairs", type=int, default=5, metavar="N",
                        help="end-to-end runs, each against a model-only run right after it (default 5)")
    parser.add_argument("--e2e-workers", type=int, default=None, metavar="N",
                        help="--workers of the e2e command (default: the command's own)")
    parser.add_argument("--e2e-batch-size", type=int, default=None, metavar="N",
                        help="--batch-size of the e2e command (default: the command's own)")
    parser.add_argument("--e2e-cpu-features", action="store_true",
                        help="with --device cuda: resample and compute features on the CPU (the command's default) "
                             "instead of the GPU front-end this harness measures otherwise")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--work-dir", type=Path, default=None, help="folder for test audio (default: a temp dir)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    t_start = time.perf_counter()
    result: dict[str, Any] = {"machine": _machine(device), "smoke": args.smoke, "argv": sys.argv[1:]}
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dcasenet-bench-")
        work = Path(tmp.name)
    else:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
    try:
        mm_n = 256 if args.smoke else (8192 if device.type == "cuda" else 2048)
        if "matmul" in args.sections:
            result["matmul"] = [bench_matmul(device, n=mm_n, reps=3 if args.smoke else 7)]
        if "model" in args.sections:
            if args.smoke:
                archs = ("v3",)
                cells = [(2, 2.0)]
                extra: set = set()
                low: set = set()
                big: set = set()
            else:
                archs = tuple(args.archs)
                cells = [(1, 5.0), (16, 5.0), (1, 60.0), (16, 60.0)]
                extra = {("v3", 1, 60.0), ("v3", 16, 5.0)}
                # low precision where the hardware has it (CUDA, AVX512-BF16/AMX); else one small cell to show the cost
                native = device.type == "cuda" or bool(result["machine"].get("cpu_flags_bf16"))
                low = extra if native else {("v3", 1, 5.0)}
                big = {(a, 16, 60.0) for a in archs}
            model_rows = []
            for arch in archs:
                arch_cells = [c for c in cells if args.full or (arch, *c) not in big or arch == "v3"]
                model_rows += bench_model(device, archs=(arch,), cells=arch_cells, extra_cells=extra,
                                          low_cells=low, big_cells=big, onnx_dir=work if _has_ort() else None, smoke=args.smoke)
            from dcasenet_hub import build_model

            flops_cache: dict[tuple[str, int, bool], float] = {}
            for r in model_rows:
                naive = r["variant"] == "naive"
                key = (r["arch"], r["frames"], naive)
                if key not in flops_cache:
                    flops_cache[key] = _flops(build_model(r["arch"], seed=0).eval(), r["frames"],
                                              NAIVE_TASKS if naive else (None,))
                r["flops_batch1"] = flops_cache[key]  # the work this variant does (naive: its three passes)
                r["gflops_per_s"] = flops_cache[key] * r["batch"] / r["median_s"] / 1e9
            result["model"] = model_rows
            if "matmul" in args.sections:
                result["matmul"].append(bench_matmul(device, n=mm_n, reps=3 if args.smoke else 7))
            ceiling = _median([x["gflops"] for x in result.get("matmul", [])]) if result.get("matmul") else None
            for r in model_rows:
                r["fraction_of_matmul"] = r["gflops_per_s"] / ceiling if ceiling else None
        if "e2e" in args.sections:
            result["e2e"] = bench_e2e(device, work, n_files=2 if args.smoke else args.e2e_files, seconds=10.0, sr=44100,
                                      smoke=args.smoke, pairs=args.e2e_pairs, workers=args.e2e_workers,
                                      cpu_features=args.e2e_cpu_features, batch_size=args.e2e_batch_size)
        if "peers" in args.sections:
            from benchmarks import peers

            reason = peers.available()
            if reason:
                _log(reason)
                result["peers"] = {"skipped": reason}
            else:
                n = 2 if args.smoke else 24
                folder = work / "peers_audio"
                folder.mkdir(exist_ok=True)
                files = peers.make_files(folder, n=n, seconds=10.0, sr=44100)
                result["peers"] = peers.bench_peers(device, files, audio_s=10.0 * n, rounds=1 if args.smoke else 3)
        if "startup" in args.sections:
            result["startup"] = bench_startup(work, reps=1 if args.smoke else 5, smoke=args.smoke)
        if "long" in args.sections:
            result["long"] = bench_long(device, work, durations=[20.0] if args.smoke else [300.0, 3600.0],
                                        sr=44100, precisions=_long_precisions(device))
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["machine"]["loadavg_end"] = _loadavg()
    result["total_s"] = time.perf_counter() - t_start
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"{device.type}-{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%MZ')}"
        f"{'-smoke' if args.smoke else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp_out, out)
    print(render(result))
    print(f"\nJSON: {out}")
    return 0


def _has_ort() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
