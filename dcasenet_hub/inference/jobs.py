"""One input on its way through the pipeline: its reader, window plan, shifted passes of a finer hop and outputs.

:class:`Job` opens an input (file or waveform), cuts its windows (:mod:`dcasenet_hub.audio`), receives each
window's network outputs from the batcher and assembles the :class:`~dcasenet_hub.inference.settings.Result`:
event windows concatenated, the shifted passes of a finer hop merged in time order, tags weighted by duration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcasenet_hub import audio as W
from dcasenet_hub.config import EVENT_REPEAT, TIME_REDUCTION
from dcasenet_hub.inference.outputs import Embeddings, Prediction, detect_events
from dcasenet_hub.inference.settings import INPUT_ERRORS, CallSettings, Result

# the pipeline's logger: users who configure (or, as HEAR does, filter) "dcasenet_hub.inference.pipeline" see these too
logger = logging.getLogger("dcasenet_hub.inference.pipeline")


class Job:
    """One input: its reader, window plan and the outputs gathered so far."""

    def __init__(self, index: int, source: Any, settings: CallSettings) -> None:
        self.index = index
        self.settings = settings
        self.error: Exception | None = None
        self.reader: W.Reader | None = None
        self.duration_s: float | None = None
        #: every sample was decoded: only then is ``duration_s`` more than a header's claim (a failed row records it)
        self.decoded = False
        self.plan: list[W.Window] = []
        self.windows: list[W.Window] | None = None
        self.streamed = False
        self.remaining = 0
        self.scene: dict[int, dict[str, Any]] = {}
        self.event: dict[int, dict[str, Any]] = {}
        self.shifted: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # event window -> shift -> outputs
        self.fine_frames: dict[int, int] = {}  # event window -> frames at the fine hop (set with its passes)
        self.n_samples = 0
        if isinstance(source, (str, Path)):
            self.source = str(source)
        elif isinstance(source, Mapping) and source.get("path"):
            self.source = str(source["path"])  # a Hugging Face datasets Audio item names its file
        elif isinstance(source, (np.ndarray, torch.Tensor, Mapping)):
            self.source = f"<array {index}>"
        else:
            self.source = f"<input {index}>"
        self._input = source

    # -- preparation (may run in a worker thread) --------------------------------------------------------------

    def open(self) -> None:
        s = self.settings
        src = self._input
        if isinstance(src, (str, Path)):
            self.reader = W.FileReader(src)
        elif isinstance(src, (np.ndarray, torch.Tensor)):
            if s.sample_rate is None:
                raise W.InputError(f"{self.source}: pass sample_rate= for waveform inputs")
            self.reader = W.ArrayReader(src, s.sample_rate, self.source)
        elif isinstance(src, Mapping):
            # an item of a Hugging Face datasets Audio column: {"array": samples, "sampling_rate": Hz, "path": ...}
            if src.get("array") is None or not src.get("sampling_rate"):
                raise TypeError(f"{self.source}: a dict input needs 'array' (the samples) and 'sampling_rate' (Hz), "
                                f"as a Hugging Face datasets Audio item; got the keys {sorted(src)}")
            array = src["array"]
            if not isinstance(array, (np.ndarray, torch.Tensor)):
                array = np.asarray(array, dtype=np.float32)  # datasets without a numpy format gives lists
            self.reader = W.ArrayReader(array, src["sampling_rate"], self.source)
        else:
            raise TypeError(f"{self.source}: unsupported input type {type(src).__name__}; "
                             "pass a file path, a numpy array, a torch tensor or a dict with 'array' and "
                             "'sampling_rate' (a Hugging Face datasets Audio item)")
        r = self.reader
        if r.warning:
            logger.warning("%s: %s", self.source, r.warning)
        self.duration_s = r.num_frames / r.sample_rate
        sr = s.frontend.sample_rate
        n = W.resampled_length(r.num_frames, r.sample_rate, sr) - (1 if s.frontend.preemphasis else 0)
        if r.num_frames == 0:
            raise W.InputError(f"{self.source}: contains no audio samples (empty)")
        if self.duration_s < W.MIN_DURATION_S - 1e-9 or n <= s.frontend.n_fft // 2:
            raise W.InputError(f"{self.source}: too short ({_ms(self.duration_s)}); "
                               f"at least {W.MIN_DURATION_S * 1000:.0f} ms of audio is needed: leave it out or "
                               f"pad it with silence{getattr(r, 'shape_hint', '')}")
        self.n_samples = n
        # a padded tail must not reach the scene head: scene crops and event windows stay separate windows then
        self.plan = W.plan(n, sample_rate=sr, windows=s.windows, kinds=s.kinds, share=not s.options.pad_tail)
        self.remaining = len(self.plan)
        self.streamed = self.duration_s > s.options.stream_threshold_s

    def prepare(self) -> Job:
        """Open, and for inputs up to ``stream_threshold_s`` compute every window's features now."""
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
        blocks = W.preemphasised_blocks(W.resampled_blocks(self.reader, s.frontend.sample_rate,
                                                           device=s.feature_device), s.frontend.preemphasis)
        held: tuple[W.Window, np.ndarray] | None = None  # an event window waiting for the next one's first samples
        for window, samples in W.cut(blocks, self.plan):
            try:
                window.mel, window.frames = W.features(samples, frontend=s.frontend,
                                                       min_frames=s.windows.min_frames, device=s.feature_device)
                if s.options.pad_tail and window.kinds == {W.EVENT}:
                    window.mel, window.frames = _pad_tail(window.mel, window.frames, s.windows.min_frames,
                                                          samples=window.stop - window.start,
                                                          hop_length=s.frontend.hop_length)
            except W.InputError as exc:
                raise W.InputError(f"{self.source}: {exc}") from None
            passes: list[W.Window] = []
            if held is not None and W.EVENT in window.kinds and window.start == held[0].stop:
                passes += self._shifted_passes(*held, lookahead=samples)
                held = None
            if self._wants_passes(window):
                if window.stop < self.n_samples:  # not the last event window: continue into the next one
                    held = (window, samples)
                else:
                    passes += self._shifted_passes(window, samples)
            self.remaining += len(passes)  # before any pass is yielded, so the job cannot complete early
            yield window
            yield from passes
        if held is not None:  # cannot happen (event windows tile the signal); never lose a window's passes
            raise RuntimeError(f"{self.source}: event window at sample {held[0].start} has no successor")
        self.decoded = True

    def _wants_passes(self, window: W.Window) -> bool:
        s = self.settings
        return (s.passes > 1 and W.EVENT in window.kinds and window.frames >= s.windows.min_frames
                and (s.predictions or s.options.layer != "scene"))

    def _shifted_passes(self, window: W.Window, samples: np.ndarray, *,
                        lookahead: np.ndarray | None = None) -> list[W.Window]:
        """The extra passes of a finer hop: the window's features shifted by ``k, 2k, ...`` mel frames.

        The last event window's passes are its normalised log-mel with the first ``p k`` frames dropped. An earlier
        window's passes continue into the next window's first samples (log-mel of the window followed by them,
        normalised with the window's own statistics, as many frames as the window has), so every 0.8 s step of
        the window gets its ``P`` frames and the grid runs on across the window boundary without a gap.
        """
        s = self.settings
        k, frames = s.hop_frames, window.frames
        mel = window.mel
        if lookahead is not None:
            from dcasenet_hub.audio import log_mel

            no_pre = dataclasses.replace(s.frontend, preemphasis=0.0)
            ahead = (s.passes - 1) * k * s.frontend.hop_length + s.frontend.n_fft // 2
            dev = s.feature_device  # where the window's own features were computed (None: the CPU)
            base = log_mel(torch.from_numpy(samples).to(dev), config=no_pre, normalize=False)
            ext = log_mel(torch.from_numpy(np.concatenate([samples, lookahead[:ahead]])).to(dev), config=no_pre,
                          normalize=False)
            mean = base.mean(dim=-1, keepdim=True)
            std = base.std(dim=-1, keepdim=True).clamp_min(s.frontend.std_floor)
            mel = ((ext - mean) / std).unsqueeze(0)
        self.fine_frames[window.index[W.EVENT]] = min(frames // TIME_REDUCTION * s.passes,
                                                      (int(mel.shape[-1]) - TIME_REDUCTION) // k + 1)
        out = []
        for p in range(1, s.passes):
            shift = p * k
            part = mel[..., shift:shift + frames]
            if part.shape[-1] < TIME_REDUCTION:
                break
            # frames = shift + available frames, so that add_output's (frames - shift) // 40 counts its steps
            out.append(W.Window(frozenset({W.EVENT}), {W.EVENT: window.index[W.EVENT]}, window.start, window.stop,
                                frames=shift + int(part.shape[-1]), mel=part, shift=shift))
        return out

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
        for rec in self.scene.values():
            for key, name in (("probs", "scene probabilities"), ("code", "scene embeddings")):
                if rec.get(key) is not None and not np.isfinite(rec[key]).all():
                    return name
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
            self.scene[window.index[W.SCENE]] = {"start": window.start, "stop": window.stop,
                                                 "probs": out.get("scene_probs"), "code": out.get("scene_code")}
        if W.EVENT in window.kinds and window.shift:
            n_steps = (window.frames - window.shift) // TIME_REDUCTION
            rec_shift: dict[str, np.ndarray] = {}
            if "event_probs" in out:
                rec_shift["event_steps"] = out["event_probs"][::EVENT_REPEAT][:n_steps]
            if "frame_embeddings" in out:
                rec_shift["frame"] = out["frame_embeddings"][:n_steps]
            self.shifted.setdefault(window.index[W.EVENT], {})[window.shift] = rec_shift
        elif W.EVENT in window.kinds:
            length = window.stop - window.start
            tiled = window.frames < s.windows.min_frames
            rec: dict[str, Any] = {"start": window.start, "length": length, "frames": window.frames, "tiled": tiled}
            if tiled:
                n_steps = 1
                n_ev = max(1, min(out["event_probs"].shape[0] if "event_probs" in out else 8,
                                  math.ceil(length / (s.event_hop_s * sr) - 1e-9)))
            else:
                n_steps = window.frames // TIME_REDUCTION
                n_ev = n_steps * round(s.frame_hop_s / s.event_hop_s)
            if "event_probs" in out:
                if s.passes == 1:
                    rec["event_probs"] = out["event_probs"][:n_ev]
                elif tiled:  # one step: its scores on the finer grid, as long as the input
                    n_grid = max(1, math.ceil(length / (s.event_hop_s * sr) - 1e-9))
                    rec["event_probs"] = np.repeat(out["event_probs"][:1], n_grid, axis=0)
                else:  # put on the grid in result(), with the shifted passes
                    rec["event_steps"] = out["event_probs"][::EVENT_REPEAT][:n_steps]
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
            return Result(self.index, self.source, error=self.error, warning=warning,
                          duration_s=self.duration_s if self.decoded else None)
        s = self.settings
        sr = s.frontend.sample_rate
        input_sr = self.reader.sample_rate if self.reader is not None else None
        res = Result(self.index, self.source, duration_s=self.duration_s, warning=warning)
        events = [self.event[i] for i in sorted(self.event)]
        scenes = [self.scene[i] for i in sorted(self.scene)]
        if s.embeddings:
            if s.options.layer == "scene":
                steps = np.stack([c["code"] for c in scenes]).astype(np.float32)
                frame = steps
                times = np.array([(c["start"] + c["stop"]) / 2 / sr for c in scenes], dtype=np.float32)
                hop_s = float(s.windows.scene_hop_s)
            else:
                steps = np.concatenate([e["frame"] for e in events]).astype(np.float32)
                if s.passes == 1:
                    frame = steps
                    times = np.concatenate([e["times"] for e in events]).astype(np.float32)
                else:
                    frame = np.concatenate([self._merged(i, "frame") for i in sorted(self.event)]).astype(np.float32)
                    times = np.concatenate([self._merged_times(i) for i in sorted(self.event)]).astype(np.float32)
                hop_s = s.hop_frames / s.frontend.frame_rate
                if not events[0]["tiled"]:  # (a wholly tiled short input is one frame at its middle)
                    frame, times = on_grid(frame, times, hop_s=hop_s,
                                           first_s=(TIME_REDUCTION - 1) / 2 / s.frontend.frame_rate)
            res.embeddings = Embeddings(
                frame=frame,
                frame_times=times,
                clip=_pool(steps, s.options.pooling),
                model_id=s.model_id, layer=s.options.layer, hop_s=hop_s, duration_s=float(self.duration_s or 0.0),
                source=self.source, sample_rate=input_sr, pooling=s.options.pooling, provenance=s.provenance,
                trained_tasks=s.trained_tasks,
            )
        if s.predictions:
            crop_probs = np.stack([c["probs"] for c in scenes]).astype(np.float32)
            weights = np.array([e["length"] for e in events], dtype=np.float64)
            window_tags = np.stack([e["tag_probs"] for e in events]).astype(np.float32)
            tags = (window_tags * weights[:, None]).sum(0) / weights.sum()
            ev = np.concatenate([self._event_grid(i) for i in sorted(self.event)]).astype(np.float32)
            duration = float(self.duration_s or 0.0)
            if s.options.pad_tail:  # the padded step's grid frames past the end of the input
                ev = ev[:max(1, math.ceil(duration / s.event_hop_s - 1e-9))]
            if s.keep is not None:  # the kept classes' columns, as computed (no renormalisation)
                scene_cols, tag_cols, event_cols = (np.asarray(k, dtype=np.int64) for k in s.keep)
                crop_probs, window_tags = crop_probs[:, scene_cols], window_tags[:, tag_cols]
                tags, ev = tags[tag_cols], ev[:, event_cols]
            class_thresholds = dict(s.class_thresholds)
            events_list = detect_events(ev, s.labels[2], hop_s=s.event_hop_s, threshold=s.threshold,
                                        class_thresholds=class_thresholds, median_filter=s.options.median_filter,
                                        min_duration=s.options.min_duration, duration_s=duration)
            res.prediction = Prediction(
                scene_probs=crop_probs.mean(axis=0).astype(np.float32),
                tag_probs=tags.astype(np.float32),
                event_probs=ev,
                event_times=(np.arange(ev.shape[0]) * s.event_hop_s).astype(np.float32),
                events=events_list,
                scene_labels=s.labels[0], tag_labels=s.labels[1], event_labels=s.labels[2],
                scene_window_probs=crop_probs,
                scene_window_starts=np.array([c["start"] / sr for c in scenes], dtype=np.float32),
                scene_window_s=float(s.windows.scene_window_s),
                tag_window_probs=window_tags,
                tag_window_starts=np.array([e["start"] / sr for e in events], dtype=np.float32),
                threshold=s.threshold, median_filter=s.options.median_filter, min_duration=s.options.min_duration,
                event_hop_s=s.event_hop_s, duration_s=duration, model_id=s.model_id,
                untrained_tasks=s.untrained, source=self.source, sample_rate=input_sr,
                heads=dict(s.heads), finetuned_task=s.finetuned_task, class_thresholds=class_thresholds,
                keep_labels=s.options.labels, exclude_labels=s.options.exclude_labels,
            )
        return res

    # -- merging the shifted passes of a finer hop -------------------------------------------------------------

    def _merged(self, i: int, key: str) -> np.ndarray:
        """Event window ``i``'s per-step outputs ``key`` of all passes, in time order (frame ``n`` of the result
        is centred on mel frame ``n * k + 19.5`` of the window for a hop of ``k`` mel frames)."""
        s = self.settings
        e = self.event[i]
        if e["tiled"]:
            return e[key]
        k, passes = s.hop_frames, s.passes
        n = self.fine_frames[i]
        shifted = self.shifted.get(i, {})
        out = np.empty((n, *e[key].shape[1:]), dtype=e[key].dtype)
        for p in range(passes):
            part = e[key] if p == 0 else shifted.get(p * k, {}).get(key)
            rows = len(range(p, n, passes))
            got = 0 if part is None else part.shape[0]
            if got != rows:  # internal consistency: every pass that fits must have run
                raise RuntimeError(f"{self.source}: pass shifted by {p * k} frames has {got} steps, expected {rows}")
            if rows:
                out[p::passes] = part
        return out

    def _merged_times(self, i: int) -> np.ndarray:
        s = self.settings
        e = self.event[i]
        if e["tiled"]:
            return e["times"]
        n = self.fine_frames[i]
        centres = (np.arange(n, dtype=np.float64) * s.hop_frames + (TIME_REDUCTION - 1) / 2) / s.frontend.frame_rate
        return e["start"] / s.frontend.sample_rate + centres

    def _event_grid(self, i: int) -> np.ndarray:
        """Event window ``i``'s probabilities on the ``event_hop_s`` grid: each grid frame takes the 0.8 s step
        whose centre is nearest to its own centre (ties: the earlier step). At the default hop this is the
        authors' 8-fold repetition, kept as the network returns it."""
        s = self.settings
        e = self.event[i]
        if "event_probs" in e:
            return e["event_probs"]
        steps = self._merged(i, "event_steps")
        grid = round(s.event_hop_s * s.frontend.frame_rate)  # grid frame in mel frames
        n_grid = (e["frames"] // TIME_REDUCTION) * (TIME_REDUCTION // grid)
        # centres in half mel frames (integers): step n at 2 * (n * k + 19.5), grid frame t at 2 * (t + 0.5) * grid
        step_c = 2 * np.arange(steps.shape[0], dtype=np.int64) * s.hop_frames + (TIME_REDUCTION - 1)
        grid_c = (2 * np.arange(n_grid, dtype=np.int64) + 1) * grid
        return steps[_nearest(step_c, grid_c)]


def _ms(seconds: float) -> str:
    """Milliseconds with two decimals, rounded down: 99.96 ms never reads as the 100 ms it falls short of."""
    return f"{math.floor(seconds * 1e5) / 100:.2f} ms"


def on_grid(frames: np.ndarray, times: np.ndarray, *, hop_s: float, first_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames on the regular grid ``first_s + i * hop_s`` from the first frame to the last one's grid point.

    The frames the network gives are on that grid except where an input ends: a short last event window (tiled to
    the network's 0.8 s) has one frame at its middle, and the shifted passes of a finer hop stop where the input
    does. Each grid point takes the frame whose time is nearest (ties: the earlier frame), as the event grid does,
    so the timestamps are regular at every length.

    Example:
        >>> f, t = on_grid(np.arange(4.0)[:, None], np.array([0.39, 0.59, 0.79, 1.31]), hop_s=0.2, first_s=0.39)
        >>> [round(float(x), 2) for x in t], f[:, 0].tolist()
        ([0.39, 0.59, 0.79, 0.99, 1.19, 1.39], [0.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    """
    t = np.asarray(times, dtype=np.float64)
    n = max(1, int(round((t[-1] - first_s) / hop_s)) + 1)
    grid = first_s + np.arange(n, dtype=np.float64) * hop_s
    return frames[_nearest(t, grid)], grid.astype(np.float32)


def _nearest(sorted_points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``sorted_points`` (ascending) to each query; ties go to the earlier point."""
    if sorted_points.shape[0] == 1:
        return np.zeros(queries.shape[0], dtype=np.int64)
    after = np.clip(np.searchsorted(sorted_points, queries), 1, sorted_points.shape[0] - 1)
    before = after - 1
    return np.where(queries - sorted_points[before] <= sorted_points[after] - queries, before, after)


def _pad_tail(mel: Any, frames: int, min_frames: int, *, samples: int, hop_length: int) -> tuple[Any, int]:
    """Pad a window's normalised log-mel with zeros (each band's mean) to the 0.8 s steps its audio needs.

    A window of ``samples`` samples needs ``ceil(samples / (40 * hop_length))`` steps, less one when the last would
    hold at most one mel frame of audio. Windows that already have those steps (every 60 s window but the last,
    audio ending on a step) and tiled short windows (under ``min_frames``, which cover their input) are returned
    unchanged.
    """
    step = TIME_REDUCTION * hop_length
    needed = -(-samples // step)
    if needed and samples - (needed - 1) * step <= hop_length:
        needed -= 1
    if frames < min_frames or needed * TIME_REDUCTION <= frames:
        return mel, frames
    padded = needed * TIME_REDUCTION
    return torch.nn.functional.pad(mel[..., :frames], (0, padded - frames)), padded


def _pool(frames: np.ndarray, pooling: str) -> np.ndarray:
    """Clip embedding of ``(T, D)`` frames: ``mean`` (D), ``max`` (D) or ``mean+max`` (2 D)."""
    if pooling == "mean":
        return frames.mean(axis=0).astype(np.float32)
    if pooling == "max":
        return frames.max(axis=0).astype(np.float32)
    return np.concatenate([frames.mean(axis=0), frames.max(axis=0)]).astype(np.float32)
