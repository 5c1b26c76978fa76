"""Windows: scene crops, event windows and the cutting of a stream of samples into them, in bounded memory.

The pipeline for one input is::

    reader (file or array, any rate, mixed to mono)
      -> resampled to 24 kHz in aligned chunks with context (identical to whole-signal resampling)
      -> pre-emphasis over the whole signal (one carried sample between chunks)
      -> windows cut from a rolling buffer: 5 s scene crops at 2.5 s hop (last crop aligned to the end) and
         non-overlapping 60 s event windows
      -> per window: log-mel without pre-emphasis, tiled to >= 40 frames if shorter, normalised on its own.

docs/outputs.md ("Windowing") states the rules; :mod:`dcasenet_hub.inference.pipeline` batches the windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcasenet_hub.config import WindowConfig

#: Inputs shorter than this (seconds) are rejected: less than one 100 ms event frame.
MIN_DURATION_S = 0.1

SCENE = "scene"
EVENT = "event"


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


def event_bounds(n: int, length: int, *, min_last: int = 0) -> list[tuple[int, int]]:
    """Non-overlapping windows ``[k * length, min(n, (k + 1) * length))`` covering ``n`` samples.

    A last window shorter than ``min_last`` samples joins the one before it (a few ms of tail cannot be analysed
    on their own: they are shorter than the STFT's padding).

    Example:
        >>> event_bounds(250, 100), event_bounds(205, 100, min_last=10)
        ([(0, 100), (100, 200), (200, 250)], [(0, 100), (100, 205)])
    """
    bounds = [(s, min(n, s + length)) for s in range(0, n, length)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def event_windows(n: int, *, sample_rate: int, windows: WindowConfig) -> list[tuple[int, int]]:
    """The event windows of a pre-emphasised signal of ``n`` samples: ``event_window_s`` long, a last one shorter
    than :data:`MIN_DURATION_S` (the shortest input) joined to the one before it."""
    return event_bounds(n, round(windows.event_window_s * sample_rate), min_last=round(MIN_DURATION_S * sample_rate))


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
            hop, see :mod:`dcasenet_hub.inference.pipeline`; 0 for the window itself).
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
        for i, b in enumerate(event_windows(n, sample_rate=sample_rate, windows=windows)):
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


