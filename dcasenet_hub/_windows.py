"""Reading, resampling, pre-emphasis and windowing of audio of any length, in bounded memory (private).

The pipeline for one input is::

    reader (file or array, any rate, mixed to mono)
      -> resampled to 24 kHz in aligned chunks with context (identical to whole-signal resampling)
      -> pre-emphasis over the whole signal (one carried sample between chunks)
      -> windows cut from a rolling buffer: 5 s scene crops at 2.5 s hop (last crop aligned to the end) and
         non-overlapping 60 s event windows
      -> per window: log-mel without pre-emphasis, tiled to >= 40 frames if shorter, normalised on its own.

docs/outputs.md ("Windowing") states the rules; :mod:`dcasenet_hub.inference` batches the windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import FrontendConfig, WindowConfig

#: Input chunk (seconds) for resampling; signals up to this length are resampled in one piece.
RESAMPLE_CHUNK_S = 60.0
#: Minimum input context (samples at the input rate) on each side of a resampling chunk.
RESAMPLE_CONTEXT = 256
#: Inputs shorter than this (seconds) are rejected: less than one 100 ms event frame.
MIN_DURATION_S = 0.1

SCENE = "scene"
EVENT = "event"


class InputError(ValueError):
    """A waveform or file that cannot be analysed (the message names it and the problem)."""


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------


class _Reader:
    """Random access to mono float32 samples of one input at its own rate."""

    name: str
    sample_rate: int
    num_frames: int
    warning: str = ""

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


#: Largest channel count taken from the last axis of a 2-D waveform (soundfile's ``(frames, channels)`` layout).
MAX_LAST_AXIS_CHANNELS = 64


class ArrayReader(_Reader):
    """A waveform in memory: ``(samples,)``, ``(channels, samples)`` or ``(frames, channels)`` (channels averaged).

    A 2-D array is ``(channels, samples)`` when its first axis is the shorter one. When the first axis is longer and
    the last has at most :data:`MAX_LAST_AXIS_CHANNELS` entries it is ``(frames, channels)``, what
    ``soundfile.read`` returns: read the other way it would be at most 64 samples, far below the 0.1 s minimum at any
    rate, so the layout is unambiguous.
    """

    def __init__(self, waveform: Any, sample_rate: int, name: str) -> None:
        import torch

        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().to("cpu", torch.float32).numpy()
        arr = np.asarray(waveform)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"{name}: waveform must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind in "iu":  # integer PCM: scale to [-1, 1)
            info = np.iinfo(arr.dtype)
            arr = (arr.astype(np.float64) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2)
        #: Appended to a "too short" error: how a 2-D waveform was read and the fix if that was not meant.
        self.shape_hint = ""
        if arr.ndim == 2:
            rows, cols = arr.shape
            if rows > cols and cols <= MAX_LAST_AXIS_CHANNELS:
                arr = arr.mean(axis=1)  # (frames, channels), e.g. from soundfile.read
            else:
                if rows > cols:
                    self.shape_hint = (f"; a waveform of shape {tuple(arr.shape)} is read as (channels, samples) = "
                                       f"({rows} channels, {cols} samples): if it is (samples, channels), pass x.T")
                arr = arr.mean(axis=0)
        elif arr.ndim != 1:
            raise InputError(f"{name}: waveform must be (samples,) or (channels, samples), got shape {arr.shape}")
        self._data = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(self._data).all():
            raise InputError(f"{name}: contains NaN or infinite samples")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise InputError(f"{name}: sample_rate must be a positive integer, got {sample_rate!r}")
        self.name = name
        self.sample_rate = int(sample_rate)
        self.num_frames = int(self._data.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._data[start:stop]


class FileReader(_Reader):
    """An audio file read block by block with soundfile (any libsndfile format, 8-bit to float, 1..N channels)."""

    def __init__(self, path: str | Path) -> None:
        from .frontend import header_warning, open_audio

        path = Path(path)
        self.name = str(path)
        self._file = open_audio(path)
        #: Non-fatal problem of the file ("" if none), e.g. a header that declares more audio than the file holds.
        self.warning = header_warning(self._file)
        self.sample_rate = int(self._file.samplerate)
        self.num_frames = int(self._file.frames)
        self._pos = 0
        self._path = path

    def read(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        from .frontend import AudioLoadError, _short

        try:
            if start != self._pos:
                self._file.seek(start)
            data = self._file.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioLoadError(self._path, f"decoding failed at frame {start} ({_short(exc)})") from None
        self._pos = start + data.shape[0]
        if data.shape[0] != stop - start:
            raise AudioLoadError(self._path, f"truncated: expected {self.num_frames} frames, got {self._pos}")
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        if not np.isfinite(mono).all():
            raise AudioLoadError(self._path, "contains NaN or infinite samples")
        return mono

    def close(self) -> None:
        self._file.close()


# ----------------------------------------------------------------------------------------------------------------
# Resampling in chunks and pre-emphasis
# ----------------------------------------------------------------------------------------------------------------


def resampled_length(num_frames: int, orig_sr: int, target_sr: int) -> int:
    """Length of the whole-signal resampled output (torchaudio's ``ceil(n * target / orig)``)."""
    if orig_sr == target_sr:
        return num_frames
    return math.ceil(num_frames * target_sr / orig_sr)


def resampled_blocks(reader: _Reader, target_sr: int, *, chunk_s: float | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of the whole signal resampled to ``target_sr``.

    Each chunk starts on an input sample whose output position is an integer (a multiple of ``orig / gcd``) and is
    resampled with at least :data:`RESAMPLE_CONTEXT` input samples of context on each side, then cut; the
    windowed-sinc filter spans fewer samples than the context, so every output sample sees exactly the input samples
    it sees when the whole signal is resampled at once (differences are float rounding only).
    """
    from .frontend import resample

    chunk_s = RESAMPLE_CHUNK_S if chunk_s is None else chunk_s
    orig = reader.sample_rate
    n = reader.num_frames
    if orig == target_sr:
        step = max(1, int(chunk_s * orig))
        for start in range(0, n, step):
            yield reader.read(start, min(n, start + step))
        return
    g = math.gcd(orig, target_sr)
    o, t = orig // g, target_sr // g
    chunk = max(1, round(chunk_s * orig / o)) * o
    if n <= chunk:
        yield np.asarray(resample(reader.read(0, n), orig, target_sr), dtype=np.float32)
        return
    ctx = math.ceil(RESAMPLE_CONTEXT / o) * o
    total_out = resampled_length(n, orig, target_sr)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        lo, hi = max(0, start - ctx), min(n, stop + ctx)
        out = np.asarray(resample(reader.read(lo, hi), orig, target_sr), dtype=np.float32)
        skip = (start - lo) // o * t
        count = (stop - start) // o * t if stop < n else total_out - start // o * t
        yield out[skip:skip + count]


def preemphasised_blocks(blocks: Iterator[np.ndarray], coefficient: float) -> Iterator[np.ndarray]:
    """``y[n] = x[n+1] - c * x[n]`` over the concatenation of ``blocks`` (length ``N - 1``), block by block."""
    prev: np.ndarray | None = None
    for block in blocks:
        if block.size == 0:
            continue
        if not coefficient:
            yield block
            continue
        x = block if prev is None else np.concatenate([prev, block])
        if x.size >= 2:
            with np.errstate(over="ignore"):  # overflow (peaks near 3e38) is reported by features()
                y = (x[1:] - np.float32(coefficient) * x[:-1]).astype(np.float32, copy=False)
            yield y
        prev = x[-1:]


# ----------------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------------


def scene_starts(n: int, length: int, hop: int) -> list[int]:
    """Start samples of the scene crops of a signal of ``n`` samples.

    Crops of ``length`` at multiples of ``hop`` while they fit, plus one crop aligned to the end when the regular
    crops do not reach it. A signal no longer than ``length`` is one crop (the whole signal).

    Example:
        >>> scene_starts(239999, 120000, 60000)   # a 10 s clip: the authors' three test-time crops
        [0, 60000, 119999]
    """
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def event_bounds(n: int, length: int) -> list[tuple[int, int]]:
    """Non-overlapping windows ``[k * length, min(n, (k + 1) * length))`` covering ``n`` samples."""
    return [(s, min(n, s + length)) for s in range(0, n, length)]


@dataclass
class Window:
    """One piece of signal to run through the network.

    Attributes:
        kinds: ``{"scene"}``, ``{"event"}`` or both (a short signal's only crop is also its only event window).
        index: Position among the windows of its kind(s): ``{kind: i}``.
        start: First sample (24 kHz, pre-emphasised signal).
        stop: One past the last sample.
        frames: Feature frames before tiling.
        mel: ``(1, n_mels, frames_tiled)`` normalised log-mel (set by :func:`features`).
        shift: Feature frames dropped from the start of the window's ``mel`` (a shifted pass for a finer timestamp
            hop, see :mod:`dcasenet_hub.inference`; 0 for the window itself).
    """

    kinds: frozenset[str]
    index: dict[str, int]
    start: int
    stop: int
    frames: int = 0
    mel: Any = None
    shift: int = 0


def plan(n: int, *, sample_rate: int, windows: WindowConfig, kinds: frozenset[str],
         share: bool = True) -> list[Window]:
    """All windows of a pre-emphasised signal of ``n`` samples, sorted by their last sample.

    With ``share`` (default) a scene crop and an event window with the same bounds are one window of both kinds;
    without it they stay two windows (their features then differ, e.g. a padded tail for the event heads only).
    """
    by_bounds: dict[tuple[Any, ...], Window] = {}
    if SCENE in kinds:
        length = round(windows.scene_window_s * sample_rate)
        hop = round(windows.scene_hop_s * sample_rate)
        for i, s in enumerate(scene_starts(n, length, hop)):
            b = (s, min(n, s + length))
            by_bounds[b] = Window(frozenset({SCENE}), {SCENE: i}, *b)
    if EVENT in kinds:
        for i, b in enumerate(event_bounds(n, round(windows.event_window_s * sample_rate))):
            w = by_bounds.get(b) if share else None
            if w is None:
                by_bounds[(*b, EVENT) if not share else b] = Window(frozenset({EVENT}), {EVENT: i}, *b)
            else:
                w.kinds = w.kinds | {EVENT}
                w.index[EVENT] = i
    return sorted(by_bounds.values(), key=lambda w: (w.stop, w.start))


def cut(blocks: Iterator[np.ndarray], plan_: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield ``(window, samples)`` in plan order from a stream of blocks, keeping only what later windows need."""
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0
    i = 0
    blocks = iter(blocks)
    exhausted = False
    while i < len(plan_):
        w = plan_[i]
        if buf_start + buf.size >= w.stop or exhausted:
            yield w, buf[w.start - buf_start:w.stop - buf_start].copy()
            i += 1
            if i < len(plan_):
                keep_from = min(x.start for x in plan_[i:])
                if keep_from > buf_start:
                    buf = buf[keep_from - buf_start:]
                    buf_start = keep_from
            continue
        try:
            block = next(blocks)
        except StopIteration:
            exhausted = True
            continue
        buf = np.concatenate([buf, block]) if buf.size else block


def features(samples: np.ndarray, *, frontend: FrontendConfig, min_frames: int) -> tuple[Any, int]:
    """Normalised log-mel ``(1, n_mels, F')`` of already pre-emphasised samples and the untiled frame count ``F``.

    Inputs with ``F < min_frames`` are tiled in time by doubling the log-mel (as the authors' tagging evaluation
    did, before normalisation) until they reach ``min_frames``.

    Raises:
        InputError: the samples are not finite (a loud input overflowed float32 in resampling or pre-emphasis).
    """
    import torch

    from .frontend import log_mel, normalize

    if not np.isfinite(samples).all():
        # finite input whose resampled or pre-emphasised values exceed float32 (peaks near 3e38)
        raise InputError("sample values too large: resampling or pre-emphasis overflows float32 (peaks near 1e38); "
                         "scale the audio to [-1, 1]")
    no_pre = dataclasses.replace(frontend, preemphasis=0.0)
    mel = log_mel(torch.from_numpy(samples), config=no_pre, normalize=False)
    frames = int(mel.shape[-1])
    while mel.shape[-1] < min_frames:
        mel = torch.cat([mel, mel], dim=-1)
    return normalize(mel, std_floor=frontend.std_floor).unsqueeze(0), frames
