"""Embeddings and predictions from audio of any length: files, waveforms or lists of either.

Windowing (docs/outputs.md, "Windowing", gives the reasons):

* **Scenes**: 5 s crops every 2.5 s of the pre-emphasised 24 kHz signal, the last crop aligned to the end; each crop
  is normalised on its own; scene probabilities are the mean of the crops' softmax. For a 10 s clip these are
  exactly the authors' three test-time crops ``[0:120000]``, ``[60000:180000]``, ``[-120000:]``. Inputs of 5 s or less
  are one crop of their whole length.
* **Events, tags and embeddings**: non-overlapping 60 s windows (the authors evaluated events on whole 60 s
  recordings and tags on whole clips, normalised as a whole), each normalised on its own; 60 s is 75 steps of
  0.8 s, so the output grid stays aligned when the windows are concatenated. Tag probabilities of longer audio are
  the duration-weighted mean over windows.
* **Short inputs**: fewer than 40 feature frames (0.8 s) are tiled in time by doubling the log-mel before
  normalisation, as the authors' tagging evaluation; outputs are cut back to the input's duration. Inputs shorter
  than 0.1 s are rejected.
* **Streaming**: files are read in blocks and resampled in aligned chunks with context, so memory stays bounded
  whatever the duration; every window's heads run in one forward pass, and windows of equal length from different
  inputs share batches.

Example:
    >>> import numpy as np
    >>> from dcasenet_hub import build_model
    >>> from dcasenet_hub.inference import embed, predict
    >>> model = build_model("v3", seed=0).eval()
    >>> wav = np.random.default_rng(0).standard_normal(3 * 24000).astype("float32") * 0.1
    >>> emb = embed(model, wav, sample_rate=24000)
    >>> emb.frame.shape, emb.clip.shape
    ((3, 512), (512,))
    >>> pred = predict(model, wav, sample_rate=24000)
    >>> pred.scene_probs.shape, pred.tag_probs.shape, pred.event_probs.shape
    ((10,), (80,), (24, 14))
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _windows as W
from ._fast import inference_runner
from ._outputs import Embeddings, Prediction, detect_events
from .frontend import AudioLoadError
from .models import TIME_REDUCTION

logger = logging.getLogger(__name__)

#: Default number of 5 s crops per forward pass (longer windows count proportionally).
DEFAULT_BATCH_SIZE = 8
#: Inputs longer than this (seconds) are decoded lazily, window by window, instead of ahead in a worker thread.
STREAM_THRESHOLD_S = 120.0
#: Errors that mark one input as failed without stopping the others.
INPUT_ERRORS = (AudioLoadError, W.InputError, ValueError, RuntimeError, OSError)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "AudioLoadError",
    "Embeddings",
    "Prediction",
    "Result",
    "detect_events",
    "embed",
    "iterate",
    "predict",
]


@dataclass
class Result:
    """One input's outcome from :func:`iterate`.

    Attributes:
        index: Position of the input in the list given to :func:`iterate`.
        source: File path, or ``"<array i>"`` for a waveform.
        embeddings: Set when embeddings were asked for and the input succeeded.
        prediction: Set when predictions were asked for and the input succeeded.
        error: The exception that made this input fail (``None`` on success).
        duration_s: Duration of the input in seconds when it could be read.
        warning: A problem that did not stop the input (``""`` if none), e.g. a file shorter than its header says.
    """

    index: int
    source: str
    embeddings: Embeddings | None = None
    prediction: Prediction | None = None
    error: Exception | None = None
    duration_s: float | None = None
    warning: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def embed(
    model: Any,
    x: Any,
    *,
    sample_rate: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    workers: int = 1,
) -> Embeddings | list[Embeddings]:
    """Frame (every 0.8 s) and clip embeddings of audio of any length.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet` (put in eval mode for the call).
        x: A file path, a waveform (numpy array or torch tensor, ``(samples,)``, ``(channels, samples)`` or
            ``(frames, channels)`` as ``soundfile.read`` gives, with up to 64 channels on the last axis; channels are
            averaged) or a list of these (returns a list, in the same order).
        sample_rate: Rate of waveform inputs in Hz (required for them; files use their own rate).
        device: Run on this device (the model is moved there); default: the model's device.
        dtype: Compute dtype (``torch.float16`` / ``torch.bfloat16`` use autocast); outputs are float32.
        batch_size: 5 s crops per forward pass (default 8; a 60 s window counts as 12).
        progress: Show tqdm progress bars (over inputs, and over the windows of long inputs).
        workers: Threads decoding and resampling inputs ahead of the network (0: none).

    Returns:
        :class:`Embeddings` (or a list of them).

    Raises:
        AudioLoadError: a file is missing, unreadable, empty, not audio or contains NaN/inf.
        ValueError: a waveform is invalid or shorter than 0.1 s, or ``sample_rate`` is missing.

    Example:
        >>> emb = model.embed("street.wav")                  # doctest: +SKIP
        >>> emb.frame.shape, emb.clip.shape                  # doctest: +SKIP
        ((12, 512), (512,))
    """
    single, inputs = _as_list(x)
    out = _collect(iterate(model, inputs, sample_rate=sample_rate, embeddings=True, predictions=False,
                           device=device, dtype=dtype, batch_size=batch_size, progress=progress, workers=workers),
                   len(inputs), "embeddings")
    return out[0] if single else out


def predict(
    model: Any,
    x: Any,
    *,
    sample_rate: int | None = None,
    threshold: float | None = None,
    median_filter: float | None = None,
    min_duration: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    workers: int = 1,
) -> Prediction | list[Prediction]:
    """Scene, tag and event predictions with label names and timestamps.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        x: A file path, a waveform or a list of these (see :func:`embed`).
        sample_rate: Rate of waveform inputs in Hz.
        threshold: Event decision threshold (default: ``model.config.event_threshold``, the authors' 0.3).
        median_filter: Median filter over the binary event activity, in seconds (``None``: none).
        min_duration: Drop events shorter than this many seconds.
        device, dtype, batch_size, progress, workers: As in :func:`embed`.

    Returns:
        :class:`Prediction` (or a list of them).

    Example:
        >>> pred = model.predict("street.wav", median_filter=0.5)   # doctest: +SKIP
        >>> pred.top_scene, pred.events[:2]                          # doctest: +SKIP
        ('street_traffic', [(0.0, 3.2, 'engine'), (4.1, 4.9, 'dog')])
    """
    single, inputs = _as_list(x)
    out = _collect(iterate(model, inputs, sample_rate=sample_rate, embeddings=False, predictions=True,
                           threshold=threshold, median_filter=median_filter, min_duration=min_duration,
                           device=device, dtype=dtype, batch_size=batch_size, progress=progress, workers=workers),
                   len(inputs), "prediction")
    return out[0] if single else out


def iterate(
    model: Any,
    inputs: Sequence[Any],
    *,
    sample_rate: int | None = None,
    embeddings: bool = True,
    predictions: bool = False,
    threshold: float | None = None,
    median_filter: float | None = None,
    min_duration: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    workers: int = 1,
) -> Iterator[Result]:
    """Process many inputs, yielding one :class:`Result` per input as soon as it is done (completion order).

    A bad input (unreadable, empty, NaN, too short...) yields a result with ``error`` set and never stops the
    others. This is what the command line uses; :func:`embed` and :func:`predict` are built on it.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        inputs: File paths and/or waveforms.
        sample_rate: Rate of waveform inputs in Hz.
        embeddings: Compute :class:`Embeddings`.
        predictions: Compute :class:`Prediction`.
        threshold: Event threshold (default: the model's, 0.3).
        median_filter: Median filter over the binary event activity, in seconds.
        min_duration: Minimum event duration in seconds.
        device: Run on this device (the model is moved there); ``"auto"``: CUDA if available.
        dtype: Compute dtype (autocast for float16 / bfloat16).
        batch_size: 5 s crops per forward pass (a 60 s window counts as 12).
        progress: tqdm bars over inputs and over the windows of inputs longer than 120 s.
        workers: Threads decoding inputs ahead of the network (0: decode in the calling thread).

    Raises:
        ValueError: invalid options, e.g. a threshold outside [0, 1] or a negative median filter or minimum duration
            (raised when iteration starts).
        TypeError: an input is neither a path nor a numpy array / torch tensor.

    Example:
        >>> for r in iterate(model, ["a.wav", "b.wav"], predictions=True):   # doctest: +SKIP
        ...     print(r.source, r.prediction.top_scene if r.ok else r.error)
    """
    if not (embeddings or predictions):
        raise ValueError("Ask for embeddings=True and/or predictions=True")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(workers) < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if threshold is not None and not (math.isfinite(float(threshold)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold}")
    for name, value in (("median_filter", median_filter), ("min_duration", min_duration)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0.0):
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value}")
    cfg = model.config
    settings = _Settings(
        frontend=cfg.frontend,
        windows=cfg.windows,
        kinds=frozenset(({W.SCENE} if predictions else set()) | {W.EVENT}),
        embeddings=embeddings,
        predictions=predictions,
        threshold=cfg.event_threshold if threshold is None else float(threshold),
        median_filter=median_filter,
        min_duration=min_duration,
        model_id=cfg.model_id,
        labels=(tuple(cfg.scene_labels), tuple(cfg.tag_labels), tuple(cfg.event_labels)),
        untrained=tuple(t for t in ("scene", "tags", "events") if t not in cfg.trained_tasks) if predictions else (),
        frame_hop_s=model.frame_hop_s,
        event_hop_s=model.event_hop_s,
        sample_rate=sample_rate,
    )
    if settings.untrained:
        logger.warning("Heads %s are not marked as trained in this model's config (provenance: %s); their "
                       "predictions may be meaningless.", ", ".join(settings.untrained), cfg.provenance)
    dev = _resolve_device(model, device)
    # the fastest exact path (batch-norm folded, channels-last; cached per model), or autocast for bf16/fp16
    runner = inference_runner(model, dtype=dtype, device=dev)
    crop_frames = cfg.frontend.num_frames(round(cfg.windows.scene_window_s * cfg.frontend.sample_rate) + 1)
    batcher = _Batcher(runner, dev, budget=int(batch_size) * crop_frames, settings=settings)
    bar = _bar(progress, total=len(inputs), desc="inputs", unit="file")
    was_training = model.training
    model.eval()
    pool = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="dcasenet-decode") if workers else None
    try:
        for job in _prepared_jobs(inputs, settings, pool, prefetch=max(2, 2 * int(workers))):
            if job.error is not None:
                yield job.result()
                bar.update(1)
                continue
            window_bar = _bar(progress and job.streamed, total=len(job.plan), desc=Path(job.source).name,
                              unit="window", leave=False)
            try:
                for window in job.iter_windows():
                    for done in batcher.add(job, window):
                        yield done.result()
                        bar.update(1)
                    window_bar.update(1)
            except INPUT_ERRORS as exc:
                job.fail(exc)
                yield job.result()
                bar.update(1)
            finally:
                window_bar.close()
        for done in batcher.flush():
            yield done.result()
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        model.train(was_training)


# ----------------------------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    frontend: Any
    windows: Any
    kinds: frozenset[str]
    embeddings: bool
    predictions: bool
    threshold: float
    median_filter: float | None
    min_duration: float | None
    model_id: str | None
    labels: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    untrained: tuple[str, ...]
    frame_hop_s: float
    event_hop_s: float
    sample_rate: int | None

    def tasks(self, kinds: frozenset[str]) -> tuple[str, ...]:
        tasks: set[str] = set()
        if W.SCENE in kinds:
            tasks.add("scene")
        if W.EVENT in kinds:
            if self.predictions:
                tasks |= {"events", "tags"}
            if self.embeddings:
                tasks.add("embeddings")
        return tuple(sorted(tasks))


def _as_list(x: Any) -> tuple[bool, list[Any]]:
    if isinstance(x, (list, tuple)):
        return False, list(x)
    return True, [x]


def _collect(results: Iterator[Result], n: int, attr: str) -> list[Any]:
    out: list[Any] = [None] * n
    for r in results:
        if r.error is not None:
            raise r.error
        out[r.index] = getattr(r, attr)
    return out


def _resolve_device(model: Any, device: str | torch.device | None) -> torch.device:
    current = next(model.parameters()).device
    if device is None or str(device) == "auto":
        if device is None:
            return current
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev != current:
        model.to(dev)
    return dev


def _bar(enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Job:
    """One input: its reader, window plan and the outputs gathered so far."""

    def __init__(self, index: int, source: Any, settings: _Settings) -> None:
        self.index = index
        self.settings = settings
        self.error: Exception | None = None
        self.reader: W._Reader | None = None
        self.duration_s: float | None = None
        self.plan: list[W.Window] = []
        self.windows: list[W.Window] | None = None
        self.streamed = False
        self.remaining = 0
        self.scene: dict[int, tuple[int, np.ndarray]] = {}
        self.event: dict[int, dict[str, Any]] = {}
        if isinstance(source, (str, Path)):
            self.source = str(source)
        else:
            self.source = f"<array {index}>"
        self._input = source

    # -- preparation (may run in a worker thread) --------------------------------------------------------------

    def open(self) -> None:
        s = self.settings
        src = self._input
        if isinstance(src, (str, Path)):
            self.reader = W.FileReader(src)
        elif isinstance(src, (np.ndarray, torch.Tensor)):
            if s.sample_rate is None:
                raise ValueError(f"{self.source}: pass sample_rate= for waveform inputs")
            self.reader = W.ArrayReader(src, s.sample_rate, self.source)
        else:
            raise TypeError(f"{self.source}: unsupported input type {type(src).__name__}; "
                             "pass a file path, a numpy array or a torch tensor")
        r = self.reader
        if r.warning:
            logger.warning("%s: %s", self.source, r.warning)
        self.duration_s = r.num_frames / r.sample_rate
        sr = s.frontend.sample_rate
        n = W.resampled_length(r.num_frames, r.sample_rate, sr) - (1 if s.frontend.preemphasis else 0)
        if r.num_frames == 0:
            raise W.InputError(f"{self.source}: contains no audio samples (empty)")
        if self.duration_s < W.MIN_DURATION_S - 1e-9 or n <= s.frontend.n_fft // 2:
            raise W.InputError(f"{self.source}: too short ({self.duration_s * 1000:.1f} ms); "
                               f"at least {W.MIN_DURATION_S * 1000:.0f} ms of audio is needed"
                               f"{getattr(r, 'shape_hint', '')}")
        self.plan = W.plan(n, sample_rate=sr, windows=s.windows, kinds=s.kinds)
        self.remaining = len(self.plan)
        self.streamed = self.duration_s > STREAM_THRESHOLD_S

    def prepare(self) -> _Job:
        """Open, and for inputs up to :data:`STREAM_THRESHOLD_S` compute every window's features now."""
        try:
            self.open()
            if not self.streamed:
                self.windows = list(self._generate())
                self._close()
        except INPUT_ERRORS as exc:
            self.fail(exc)
        return self

    def _generate(self) -> Iterator[W.Window]:
        s = self.settings
        if self.reader is None:
            raise RuntimeError(f"{self.source}: windows requested before the input was opened")
        blocks = W.preemphasised_blocks(W.resampled_blocks(self.reader, s.frontend.sample_rate),
                                        s.frontend.preemphasis)
        for window, samples in W.cut(blocks, self.plan):
            try:
                window.mel, window.frames = W.features(samples, frontend=s.frontend,
                                                       min_frames=s.windows.min_frames)
            except W.InputError as exc:
                raise W.InputError(f"{self.source}: {exc}") from None
            yield window

    def iter_windows(self) -> Iterator[W.Window]:
        if self.windows is not None:
            yield from self.windows
            self.windows = None
            return
        try:
            yield from self._generate()
        finally:
            self._close()

    def _close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.windows = None
        self._close()

    # -- outputs -----------------------------------------------------------------------------------------------

    def _non_finite(self) -> str:
        """Name of the first output holding NaN or infinity (``""`` if all are finite): such results are failures."""
        for _, probs in self.scene.values():
            if not np.isfinite(probs).all():
                return "scene probabilities"
        names = {"event_probs": "event probabilities", "tag_probs": "tag probabilities", "frame": "embeddings"}
        for rec in self.event.values():
            for key, name in names.items():
                if key in rec and not np.isfinite(rec[key]).all():
                    return name
        return ""

    def add_output(self, window: W.Window, out: dict[str, np.ndarray]) -> bool:
        """Store one window's outputs; True when the job has all of them."""
        s = self.settings
        sr = s.frontend.sample_rate
        if W.SCENE in window.kinds:
            probs = out["scene_probs"]
            self.scene[window.index[W.SCENE]] = (window.start, probs)
        if W.EVENT in window.kinds:
            length = window.stop - window.start
            tiled = window.frames < s.windows.min_frames
            rec: dict[str, Any] = {"start": window.start, "length": length}
            if tiled:
                n_steps = 1
                n_ev = max(1, min(out["event_probs"].shape[0] if "event_probs" in out else 8,
                                  math.ceil(length / (s.event_hop_s * sr) - 1e-9)))
            else:
                n_steps = window.frames // TIME_REDUCTION
                n_ev = n_steps * round(s.frame_hop_s / s.event_hop_s)
            if "event_probs" in out:
                rec["event_probs"] = out["event_probs"][:n_ev]
            if "tag_probs" in out:
                rec["tag_probs"] = out["tag_probs"]
            if "frame_embeddings" in out:
                rec["frame"] = out["frame_embeddings"][:n_steps]
                if tiled:
                    rec["times"] = np.array([window.start / sr + length / sr / 2], dtype=np.float32)
                else:
                    steps = np.arange(n_steps, dtype=np.float64)
                    centres = (steps * TIME_REDUCTION + (TIME_REDUCTION - 1) / 2) / s.frontend.frame_rate
                    rec["times"] = (window.start / sr + centres).astype(np.float32)
            self.event[window.index[W.EVENT]] = rec
        self.remaining -= 1
        return self.remaining == 0

    def result(self) -> Result:
        if self.error is None:
            bad = self._non_finite()
            if bad:
                self.error = W.InputError(
                    f"{self.source}: the network gave non-finite {bad} (NaN or infinity); nothing is written for "
                    "this input. Check the audio (extreme sample values?) and the model weights")
        warning = self.reader.warning if self.reader is not None else ""
        if self.error is not None:
            return Result(self.index, self.source, error=self.error, duration_s=self.duration_s, warning=warning)
        s = self.settings
        sr = s.frontend.sample_rate
        input_sr = self.reader.sample_rate if self.reader is not None else None
        res = Result(self.index, self.source, duration_s=self.duration_s, warning=warning)
        events = [self.event[i] for i in sorted(self.event)]
        if s.embeddings:
            frame = np.concatenate([e["frame"] for e in events]).astype(np.float32)
            res.embeddings = Embeddings(
                frame=frame,
                frame_times=np.concatenate([e["times"] for e in events]).astype(np.float32),
                clip=frame.mean(axis=0).astype(np.float32),
                model_id=s.model_id, layer="gru", hop_s=s.frame_hop_s, duration_s=float(self.duration_s or 0.0),
                source=self.source, sample_rate=input_sr,
            )
        if s.predictions:
            scenes = [self.scene[i] for i in sorted(self.scene)]
            crop_probs = np.stack([p for _, p in scenes]).astype(np.float32)
            weights = np.array([e["length"] for e in events], dtype=np.float64)
            window_tags = np.stack([e["tag_probs"] for e in events]).astype(np.float32)
            tags = (window_tags * weights[:, None]).sum(0) / weights.sum()
            ev = np.concatenate([e["event_probs"] for e in events]).astype(np.float32)
            duration = float(self.duration_s or 0.0)
            events_list = detect_events(ev, s.labels[2], hop_s=s.event_hop_s, threshold=s.threshold,
                                        median_filter=s.median_filter, min_duration=s.min_duration,
                                        duration_s=duration)
            res.prediction = Prediction(
                scene_probs=crop_probs.mean(axis=0).astype(np.float32),
                tag_probs=tags.astype(np.float32),
                event_probs=ev,
                event_times=(np.arange(ev.shape[0]) * s.event_hop_s).astype(np.float32),
                events=events_list,
                scene_labels=s.labels[0], tag_labels=s.labels[1], event_labels=s.labels[2],
                scene_window_probs=crop_probs,
                scene_window_starts=np.array([st / sr for st, _ in scenes], dtype=np.float32),
                scene_window_s=float(s.windows.scene_window_s),
                tag_window_probs=window_tags,
                tag_window_starts=np.array([e["start"] / sr for e in events], dtype=np.float32),
                threshold=s.threshold, median_filter=s.median_filter, min_duration=s.min_duration,
                event_hop_s=s.event_hop_s, duration_s=duration, model_id=s.model_id,
                untrained_tasks=s.untrained, source=self.source, sample_rate=input_sr,
            )
        return res


def _prepared_jobs(inputs: Sequence[Any], settings: _Settings, pool: ThreadPoolExecutor | None,
                   prefetch: int) -> Iterator[_Job]:
    """Jobs in input order; short inputs are decoded ahead in ``pool`` (at most ``prefetch`` in flight)."""
    if pool is None:
        for i, x in enumerate(inputs):
            yield _Job(i, x, settings).prepare()
        return
    queue: deque[Future[_Job]] = deque()
    it = iter(enumerate(inputs))
    for i, x in it:
        queue.append(pool.submit(_Job(i, x, settings).prepare))
        if len(queue) >= prefetch:
            break
    while queue:
        job = queue.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(pool.submit(_Job(nxt[0], nxt[1], settings).prepare))
        yield job


class _Batcher:
    """Groups windows of equal length and equal heads into forward passes of at most ``budget`` frames."""

    def __init__(self, model: Any, device: torch.device, *, budget: int, settings: _Settings) -> None:
        self.model = model
        self.device = device
        self.budget = budget
        self.settings = settings
        self.pending: dict[tuple[int, tuple[str, ...]], list[tuple[_Job, W.Window]]] = {}
        self.pending_frames = 0

    def add(self, job: _Job, window: W.Window) -> list[_Job]:
        frames = int(window.mel.shape[-1])
        key = (frames, self.settings.tasks(window.kinds))
        items = self.pending.setdefault(key, [])
        items.append((job, window))
        self.pending_frames += frames
        done: list[_Job] = []
        if len(items) >= max(1, self.budget // frames):
            done += self._run(key)
        while self.pending_frames > 4 * self.budget:  # many distinct lengths: run the oldest group
            oldest = min(self.pending, key=lambda k: self.pending[k][0][0].index)
            done += self._run(oldest)
        return done

    def flush(self) -> list[_Job]:
        done: list[_Job] = []
        while self.pending:
            oldest = min(self.pending, key=lambda k: self.pending[k][0][0].index)
            done += self._run(oldest)
        return done

    def _run(self, key: tuple[int, tuple[str, ...]]) -> list[_Job]:
        items = self.pending.pop(key)
        frames, tasks = key
        self.pending_frames -= frames * len(items)
        live = [(j, w) for j, w in items if j.error is None]
        if not live:
            return []
        param_dtype = next(self.model.parameters()).dtype
        mel = torch.cat([w.mel for _, w in live]).unsqueeze(1).to(self.device, dtype=param_dtype)
        for _, w in live:
            w.mel = None  # free the features
        try:
            outs = self._forward(mel, tasks)
        except INPUT_ERRORS as exc:  # e.g. out of memory on one batch: fail these inputs, keep going
            done = []
            for j, _ in live:
                if j.error is None:
                    j.fail(exc)
                    done.append(j)
            return done
        done = []
        for b, (job, window) in enumerate(live):
            per = {k: v[b] for k, v in outs.items() if k != "frame_times"}
            if "frame_times" in outs:
                per["frame_times"] = outs["frame_times"]
            if job.add_output(window, per):
                done.append(job)
        return done

    def _forward(self, mel: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(mel, tasks=tasks)
        res: dict[str, np.ndarray] = {}
        if out.scene_logits is not None:
            res["scene_probs"] = torch.softmax(out.scene_logits.float(), dim=-1).cpu().numpy()
        if out.tag_logits is not None:
            res["tag_probs"] = torch.sigmoid(out.tag_logits.float()).cpu().numpy()
        if out.event_probs is not None:
            res["event_probs"] = out.event_probs.float().cpu().numpy()
        if out.frame_embeddings is not None:
            res["frame_embeddings"] = out.frame_embeddings.float().cpu().numpy()
            res["frame_times"] = out.frame_times.float().cpu().numpy()
        return res
