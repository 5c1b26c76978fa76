"""How fast :func:`~dcasenet_hub.inference.embed` and :func:`~dcasenet_hub.inference.predict` run on this machine,
for each device, dtype, backend and batch size it offers: what ``dcasenet-hub bench`` prints.

Each setting runs the public pipeline on synthetic audio (seeded noise, tones and clicks at the model's sample rate,
so decoding and resampling are not part of the figure) after a warm-up, and records seconds of audio per second, the
real-time factor and the memory the process peaked at. Speed does not depend on the weights' values.

Example:
    >>> from dcasenet_hub.inference.bench import Setting, Measurement, fastest
    >>> slow = Measurement(Setting("embed", "cpu", "fp32", "torch", 1), audio_s=10.0, seconds=1.0)
    >>> fast = Measurement(Setting("embed", "cpu", "fp32", "torch", 8), audio_s=80.0, seconds=2.0)
    >>> fastest([slow, fast], task="embed").setting.batch_size
    8
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub.devices import cpu_info, native_cpu_bf16
from dcasenet_hub.errors import OptionsError
from dcasenet_hub.inference.options import INT8, InferenceOptions

#: What is measured: the two commands that run the network over audio.
TASKS = ("embed", "predict")
#: Batch sizes (5 s windows per forward pass) of the default run and of ``--quick``.
BATCH_SIZES = (1, 4, 16)
QUICK_BATCH_SIZES = (1, 4)
#: Length of each synthetic clip (seconds): a typical dataset clip.
CLIP_S = 10.0
#: Timed seconds per setting, at least (one call always; more calls until this much time has passed).
MIN_TIME_S = 1.0
QUICK_MIN_TIME_S = 0.0


@dataclass(frozen=True)
class Setting:
    """One way to run a task: ``dcasenet-hub TASK --device D --dtype T --backend B --batch-size N``."""

    task: str
    device: str
    dtype: str
    backend: str
    batch_size: int

    def command_options(self) -> str:
        """The command-line options that select this setting."""
        return f"--device {self.device} --dtype {self.dtype} --backend {self.backend} --batch-size {self.batch_size}"


@dataclass(frozen=True)
class Measurement:
    """What one setting achieved.

    Attributes:
        setting: The setting.
        audio_s: Seconds of audio processed in the timed calls.
        seconds: Wall-clock seconds of the timed calls.
        peak_memory_mib: Peak resident memory of the process during the timed calls (CPU), or the largest CUDA
            allocation (GPU); ``None`` where it could not be read.
        memory_kind: ``"peak RSS"`` or ``"CUDA max allocated"``.
    """

    setting: Setting
    audio_s: float
    seconds: float
    peak_memory_mib: float | None = None
    memory_kind: str = "peak RSS"

    @property
    def audio_s_per_s(self) -> float:
        """Seconds of audio per wall-clock second (times faster than real time)."""
        return self.audio_s / self.seconds if self.seconds > 0 else math.inf

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of computing per second of audio (below 1 is faster than real time)."""
        return self.seconds / self.audio_s

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.setting), "audio_s": self.audio_s, "seconds": self.seconds,
                "audio_s_per_s": self.audio_s_per_s, "rtf": self.rtf, "peak_memory_mib": self.peak_memory_mib,
                "memory_kind": self.memory_kind}


@dataclass
class BenchReport:
    """All measurements of one run, the machine they ran on and the fastest setting of each task."""

    measurements: list[Measurement]
    machine: dict[str, Any]
    model: str
    skipped: list[str] = field(default_factory=list)
    started: str = ""
    wall_s: float = 0.0
    clip_s: float = CLIP_S

    def fastest(self, task: str) -> Measurement | None:
        return fastest(self.measurements, task=task)

    def to_dict(self) -> dict[str, Any]:
        best = {t: (m.to_dict() if (m := self.fastest(t)) else None) for t in TASKS}
        return {"started": self.started, "wall_s": self.wall_s, "model": self.model, "clip_s": self.clip_s,
                "machine": self.machine,
                "measurements": [m.to_dict() for m in self.measurements], "fastest": best, "skipped": self.skipped}


def fastest(measurements: Sequence[Measurement], *, task: str) -> Measurement | None:
    """The measurement of ``task`` with the most seconds of audio per second (``None`` if none was measured).

    Ties go to the smaller batch size (less memory), then to the earlier measurement.
    """
    rows = [m for m in measurements if m.setting.task == task]
    if not rows:
        return None
    return max(rows, key=lambda m: (m.audio_s_per_s, -m.setting.batch_size))


def machine_info() -> dict[str, Any]:
    """CPU, GPU and library versions, as the JSON and the table's header record them."""
    import platform

    import torch

    info: dict[str, Any] = {"cpu": cpu_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def available_settings(
    *,
    quick: bool = False,
    devices: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    tasks: Sequence[str] = TASKS,
) -> tuple[list[Setting], list[str]]:
    """The settings worth measuring here, and a line for each left out and why.

    Default: every device this torch can use (CPU, CUDA, MPS); on the CPU fp32, bf16 only where the CPU has native
    bf16 (elsewhere it is emulated at a fifth of fp32's speed), onnxruntime and int8 (which runs on onnxruntime) when
    the onnx extra is installed; on CUDA fp32, bf16 and fp16 with torch. ``quick``: the first device only (CUDA if there is one), its default dtype and torch, two
    batch sizes. Explicit ``devices``/``dtypes``/``backends``/``batch_sizes`` narrow or widen the choice. A
    combination that :class:`~dcasenet_hub.inference.InferenceOptions` refuses (what embed and predict would refuse)
    is left out with its error.

    Raises:
        OptionsError: every combination chosen is refused (the first one's error, naming the option and the fix).
    """
    import torch

    skipped: list[str] = []
    refused: OptionsError | None = None
    have_ort = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
    if devices is None:
        devices = ["cpu"]
        if torch.cuda.is_available():
            devices.insert(0, "cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append("mps")
        if quick:
            devices = devices[:1]
    sizes = tuple(batch_sizes or (QUICK_BATCH_SIZES if quick else BATCH_SIZES))
    out: list[Setting] = []
    for device in devices:
        kind = torch.device(device).type
        if dtypes is not None:
            dts = list(dtypes)
        elif quick:
            dts = ["fp32"]
        elif kind == "cuda":
            dts = ["fp32", "bf16", "fp16"]
        elif kind == "cpu" and native_cpu_bf16():
            dts = ["fp32", "bf16"]
        else:
            dts = ["fp32"]
            if kind == "cpu":
                skipped.append("cpu bf16: this CPU has no native bf16 (AVX512-BF16/AMX), emulated it runs at about "
                               "a fifth of fp32's speed (--dtypes bf16 measures it anyway)")
        if backends is not None:
            bks = list(backends)
        elif quick or kind != "cpu":
            bks = ["torch"]
        else:
            bks = ["torch", "onnxruntime"] if have_ort else ["torch"]
            if not have_ort:
                skipped.append('onnxruntime: not installed (pip install "dcasenet-hub[onnx]")')
        if dtypes is None and "onnxruntime" in bks and kind == "cpu" and have_ort:
            dts.append("int8")
        for dtype in dts:
            for backend in ["onnxruntime"] if dtype == INT8 else bks:  # int8 is the quantized onnxruntime graph
                try:  # what embed and predict would refuse is not measured
                    InferenceOptions(device=device, dtype=dtype, backend=backend)
                except OptionsError as exc:
                    skipped.append(f"{device} {dtype} {backend}: {exc}")
                    refused = refused or exc
                    continue
                out += [Setting(task, device, dtype, backend, int(b)) for task in tasks for b in sizes]
    if not out and refused is not None:
        raise refused
    return out, skipped


def synthetic_clips(n: int, *, sample_rate: int, seconds: float = CLIP_S, seed: int = 0) -> list[np.ndarray]:
    """``n`` different seeded mono clips (noise, a tone, clicks) of ``seconds`` at ``sample_rate``, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    clips = []
    for i in range(n):
        tone = 0.2 * np.sin(2 * np.pi * (220.0 * (i % 7 + 1)) * t)
        clicks = (np.arange(t.size) % (sample_rate // 5) < 40) * 0.4
        clips.append((0.05 * rng.standard_normal(t.size) + tone + clicks).astype(np.float32))
    return clips


def clips_per_call(batch_size: int, *, seconds: float = CLIP_S, window_s: float = 5.0) -> int:
    """Clips one call gets so that its forward passes are full batches (a 10 s clip is two 5 s windows)."""
    return max(1, int(batch_size * window_s // seconds))


#: ``measure(model, setting, clips, sample_rate, min_time_s, warmup) -> Measurement``: how a setting is timed (tests
#: pass their own, with made-up timings).
Measure = Callable[[Any, Setting, list[np.ndarray], int, float, bool], Measurement]


def measure_setting(model: Any, setting: Setting, clips: list[np.ndarray], sample_rate: int,
                    min_time_s: float, warmup: bool = True) -> Measurement:
    """Time ``setting`` on ``clips`` through the public pipeline: a warm-up call (``warmup``: on all of ``clips``,
    else on the first only, which builds the runner but not every kernel for the batch's shape), then calls until
    ``min_time_s`` has passed (at least one), with the process's peak memory over the timed calls."""
    import torch

    from dcasenet_hub.inference.pipeline import iterate
    from dcasenet_hub.inference.settings import silence_untrained_warnings

    s = setting
    dtype = None if s.dtype == "fp32" else s.dtype
    kwargs = {"sample_rate": sample_rate, "device": s.device, "dtype": dtype, "backend": s.backend,
              "batch_size": s.batch_size, "workers": 0, "embeddings": s.task == "embed",
              "predictions": s.task == "predict"}

    silence_untrained_warnings(model)  # random weights are fine for timing

    def call(inputs: list[np.ndarray]) -> None:
        for r in iterate(model, inputs, **kwargs):
            if r.error is not None:
                raise r.error  # a setting that fails is an error of the run, not a slow measurement

    cuda = torch.device(s.device).type == "cuda"
    call(clips if warmup else clips[:1])  # builds the runner (optimised copy, ONNX session) and kernels
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
    audio_s = len(clips) * clips[0].size / sample_rate
    total, calls = 0.0, 0
    while calls == 0 or total < min_time_s:
        t0 = time.perf_counter()
        call(clips)
        if cuda:
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
        calls += 1
    if cuda:
        peak: float | None = torch.cuda.max_memory_allocated() / 2**20
        kind = "CUDA max allocated"
    else:
        peak, kind = _peak_rss_mib(), "peak RSS"
    return Measurement(s, audio_s=audio_s * calls, seconds=total, peak_memory_mib=peak, memory_kind=kind)


def run_bench(
    model: Any,
    settings: Sequence[Setting],
    *,
    model_name: str = "",
    quick: bool = False,
    min_time_s: float | None = None,
    measure: Measure = measure_setting,
    skipped: Sequence[str] = (),
    on_result: Callable[[Measurement], None] | None = None,
    clip_s: float = CLIP_S,
) -> BenchReport:
    """Measure every setting in turn (in the given order) and collect a :class:`BenchReport`.

    Args:
        model: The model to time (weights' values do not change the speed).
        settings: From :func:`available_settings`.
        model_name: How the report names the model.
        quick: Time one call per setting (no repeats) unless ``min_time_s`` says otherwise, and warm up on a whole
            batch only for the first batch size of each device, dtype, backend and task.
        min_time_s: Timed seconds per setting at least (default :data:`MIN_TIME_S`, 0 with ``quick``).
        measure: Times one setting (default :func:`measure_setting`); tests pass made-up timings.
        skipped: Lines saying which settings were left out and why (kept in the report).
        on_result: Called with each measurement as soon as it is taken (the CLI prints progress with it).
        clip_s: Length of each synthetic clip in seconds (default 10 s, a typical dataset clip).
    """
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    rate = int(model.config.frontend.sample_rate)
    limit = (QUICK_MIN_TIME_S if quick else MIN_TIME_S) if min_time_s is None else float(min_time_s)
    n = max((clips_per_call(s.batch_size, seconds=clip_s) for s in settings), default=1)
    pool = synthetic_clips(n, sample_rate=rate, seconds=clip_s)
    rows = []
    warmed: set[tuple[str, str, str, str]] = set()
    for s in settings:
        key = (s.task, s.device, s.dtype, s.backend)
        m = measure(model, s, pool[: clips_per_call(s.batch_size, seconds=clip_s)], rate, limit,
                    not quick or key not in warmed)
        warmed.add(key)
        rows.append(m)
        if on_result is not None:
            on_result(m)
    return BenchReport(rows, machine_info(), model_name, skipped=list(skipped), started=started,
                       wall_s=time.perf_counter() - t0, clip_s=float(clip_s))


def format_table(report: BenchReport) -> str:
    """The report as a Markdown table, with the fastest setting of each task and the memory it used."""
    cpu = report.machine.get("cpu", {})
    flags = cpu.get("flags")
    head = [f"Machine: {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores"
            f" ({', '.join(flags) if flags else 'flags unknown' if flags is None else 'no AVX2'}),"
            f" torch {report.machine.get('torch', '?')}"
            + (f", onnxruntime {report.machine['onnxruntime']}" if "onnxruntime" in report.machine else "")
            + (f", GPU {', '.join(report.machine['cuda'])}" if report.machine.get("cuda") else ""),
            f"Model: {report.model}; synthetic {report.clip_s:g} s clips; {report.started}, {report.wall_s:.0f} s", "",
            "| task | device | dtype | backend | batch | audio s/s | RTF | memory MiB |",
            "|---|---|---|---|---:|---:|---:|---:|"]
    for m in report.measurements:
        s = m.setting
        mem = "?" if m.peak_memory_mib is None else f"{m.peak_memory_mib:.0f}"
        head.append(f"| {s.task} | {s.device} | {s.dtype} | {s.backend} | {s.batch_size} | {m.audio_s_per_s:.1f} "
                    f"| {m.rtf:.4f} | {mem} |")
    head.append("")
    head.append("audio s/s: seconds of audio per second (times real time); RTF: seconds of computing per second of "
                "audio; memory: the process's peak RSS (CPU) or CUDA max allocated (GPU).")
    for task in TASKS:
        best = report.fastest(task)
        if best is None:
            continue
        mem = "" if best.peak_memory_mib is None else f", {best.memory_kind} {best.peak_memory_mib:.0f} MiB"
        head.append(f"Fastest {task}: {best.setting.command_options()} ({best.audio_s_per_s:.1f} audio s/s, "
                    f"RTF {best.rtf:.4f}{mem})")
    head += [f"Not measured: {line}" for line in report.skipped]
    return "\n".join(head)


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs`` 5), so the next reading is this
    setting's own peak; elsewhere the reading stays the process's peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return None
