"""Audio -> windows -> head inputs and scores for fine-tuning, through the same functions as inference.

Every step is the shared one, so validation sees exactly what :func:`~dcasenet_hub.DcaseNet.predict` sees: decoding
and resampling (:func:`dcasenet_hub.audio.load_audio`), pre-emphasis over the whole clip, the scene crops and 60 s
event windows (:func:`~dcasenet_hub.audio.scene_starts`, :func:`~dcasenet_hub.audio.event_windows`), per-window
features (:func:`~dcasenet_hub.audio.features`), the forward pass
(:func:`~dcasenet_hub.inference.runner.inference_runner`) and the clip scores.

Short clips follow inference's rule: under :data:`~dcasenet_hub.audio.MIN_DURATION_S` they are data problems, under
40 frames their log-mel is tiled by doubling. Training crops of short clips are tiled the same way, except detection
crops, which are padded with silence so labels keep their timestamps (docs/finetuning.md, "The three tasks").

Example:
    >>> window_bounds("scene", 239999, FrontendConfig(), WindowConfig())   # a 10 s clip: the authors' 3 crops
    [(0, 120000), (60000, 180000), (119999, 239999)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dcasenet_hub._progress import progress_bar
from dcasenet_hub.audio import (
    MIN_DURATION_S,
    event_windows,
    features,
    load_audio,
    preemphasis,
    scene_starts,
)
from dcasenet_hub.config import (
    EVENT_REPEAT,
    TIME_REDUCTION,
    FrontendConfig,
    WindowConfig,
)
from dcasenet_hub.errors import AudioLoadError, DataError
from dcasenet_hub.finetuning.heads import head_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dcasenet_hub.finetuning.data import Clip, Dataset

#: Clamp of probabilities in the validation loss (as the training loss on probabilities).
_EPS = 1e-7


@dataclass
class ClipAudio:
    """A clip's pre-emphasised waveform at the model's rate and its targets."""

    wave: np.ndarray
    target: np.ndarray  # (n,) class one-hot / multi-hot, or (event frames, n) event roll on the 100 ms grid
    label_index: int = -1


@dataclass
class WindowFeatures:
    """Head inputs of every window of one clip."""

    feats: list[Any] = field(default_factory=list)  # (D,) per window, or (steps, D) for events
    starts: list[int] = field(default_factory=list)  # first sample
    lengths: list[int] = field(default_factory=list)  # samples
    frames: list[int] = field(default_factory=list)  # feature frames before tiling


def event_hop_s(frontend: FrontendConfig) -> float:
    """Seconds between event outputs: one 0.8 s step repeated :data:`~dcasenet_hub.config.EVENT_REPEAT` times."""
    return TIME_REDUCTION // EVENT_REPEAT / frontend.frame_rate


def event_roll(clip: Clip, labels: tuple[str, ...], frontend: FrontendConfig) -> np.ndarray:
    """``(frames, labels)`` targets of a clip's events on the event grid (a frame is active if an event touches it)."""
    hop = event_hop_s(frontend)
    n = max(1, math.ceil((clip.duration or 0.0) / hop - 1e-9))
    roll = np.zeros((n, len(labels)), dtype=np.float32)
    index = {name: i for i, name in enumerate(labels)}
    for onset, offset, label in clip.events:
        a = math.floor(onset / hop + 1e-9)
        b = math.ceil(offset / hop - 1e-9)
        roll[a:max(a + 1, b), index[label]] = 1.0
    return roll


def load_clips(clips: list[Clip], dataset: Dataset, frontend: FrontendConfig, *, progress: bool,
               what: str) -> list[ClipAudio]:
    """Decode, resample and pre-emphasise every clip, with its targets.

    Raises:
        DataError: files that cannot be decoded or are shorter than 0.1 s (all listed).
    """
    out: list[ClipAudio] = []
    problems: list[str] = []
    index = {name: i for i, name in enumerate(dataset.labels)}
    for clip in progress_bar(clips, enabled=progress, desc=f"Loading {what} audio", unit="clip"):
        try:
            wave, _ = load_audio(clip.path, sample_rate=frontend.sample_rate)
        except AudioLoadError as exc:
            problems.append(str(exc))
            continue
        if wave.shape[-1] < MIN_DURATION_S * frontend.sample_rate - 1e-6:  # read_dataset checks it unless told not
            problems.append(f"{clip.path}: only {wave.shape[-1] / frontend.sample_rate * 1000:.0f} ms long; clips "
                            f"need at least {MIN_DURATION_S * 1000:.0f} ms (as for predict)")
            continue
        wave = preemphasis(wave, frontend.preemphasis) if frontend.preemphasis else wave
        if dataset.task == "events":
            out.append(ClipAudio(wave, event_roll(clip, dataset.labels, frontend)))
            continue
        target = np.zeros(len(dataset.labels), dtype=np.float32)
        for label in clip.labels:
            target[index[label]] = 1.0
        out.append(ClipAudio(wave, target, index[clip.labels[0]] if dataset.task == "scene" else -1))
    if problems:
        raise DataError(dataset.source, problems)
    return out


def window_bounds(task: str, n: int, frontend: FrontendConfig, windows: WindowConfig) -> list[tuple[int, int]]:
    """The windows ``predict`` cuts from a pre-emphasised signal of ``n`` samples for ``task``'s head."""
    sr = frontend.sample_rate
    if task == "scene":
        length = round(windows.scene_window_s * sr)
        return [(s, min(n, s + length)) for s in scene_starts(n, length, round(windows.scene_hop_s * sr))]
    return event_windows(n, sample_rate=sr, windows=windows)


def window_mel(samples: np.ndarray, config: Any, *, min_frames: int | None = None) -> tuple[torch.Tensor, int]:
    """``(1, n_mels, F')`` model input of pre-emphasised samples and the untiled frame count (the shared path)."""
    return features(np.ascontiguousarray(samples, dtype=np.float32), frontend=config.frontend,
                    min_frames=config.windows.min_frames if min_frames is None else min_frames)


def head_inputs(model: Any, task: str, mel: torch.Tensor) -> torch.Tensor:
    """What ``task``'s head receives for ``mel`` (B, 1, n_mels, F): the forward pass with a pre-hook on the head."""
    captured: dict[str, Any] = {}
    handle = head_of(model, task).register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
    try:
        model(mel, tasks=(task,))
    finally:
        handle.remove()
    return captured["x"]


def extract(model: Any, task: str, audio: list[ClipAudio], *, batch_size: int, device: Any, progress: bool,
            desc: str, dtype: Any = None) -> list[WindowFeatures]:
    """Head inputs of all windows of all clips, batched by window length, under ``torch.inference_mode``.

    ``dtype`` is the network's precision (``None``: exact fp32); the head inputs are returned as float32.
    """
    import torch

    from dcasenet_hub.inference.runner import inference_runner

    config = model.config
    out = [WindowFeatures() for _ in audio]
    jobs: dict[int, list[tuple[int, int, int]]] = {}
    for ci, a in enumerate(audio):
        for start, stop in window_bounds(task, a.wave.shape[-1], config.frontend, config.windows):
            jobs.setdefault(stop - start, []).append((ci, start, stop))
            out[ci].feats.append(None)
            out[ci].starts.append(start)
            out[ci].lengths.append(stop - start)
            out[ci].frames.append(0)
    slot = {ci: {s: k for k, s in enumerate(out[ci].starts)} for ci in range(len(audio))}
    was_training = model.training
    model.eval()
    runner = inference_runner(model, device=device, dtype=dtype)  # the fast path predict() uses
    bar = progress_bar(enabled=progress, total=sum(len(v) for v in jobs.values()), desc=desc, unit="window")
    try:
        with torch.inference_mode():
            for length in sorted(jobs):
                items = jobs[length]
                for b in range(0, len(items), batch_size):
                    chunk = items[b:b + batch_size]
                    mels, frames = zip(*(window_mel(audio[ci].wave[s:e], config) for ci, s, e in chunk))
                    x = torch.cat(mels).unsqueeze(1).to(device)
                    feats = head_inputs(runner, task, x).float().cpu()
                    for (ci, s, _e), f, nf in zip(chunk, feats, frames):
                        k = slot[ci][s]
                        out[ci].feats[k] = f.clone()
                        out[ci].frames[k] = nf
                    bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out


def steps_and_frames(frames: int, length: int, config: Any) -> tuple[int, int]:
    """Valid trunk steps and event frames of a window, as :mod:`dcasenet_hub.inference.pipeline` cuts them."""
    if frames < config.windows.min_frames:  # tiled short input: one step, cut to the input's duration
        grid = event_hop_s(config.frontend) * config.frontend.sample_rate
        return 1, max(1, min(EVENT_REPEAT, math.ceil(length / grid - 1e-9)))
    steps = frames // TIME_REDUCTION
    return steps, steps * EVENT_REPEAT


def probe_samples(task: str, feats: list[WindowFeatures], audio: list[ClipAudio],
                  config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Training samples of a linear probe: one per window (clip tasks) or per 0.8 s step (events)."""
    import torch

    xs, ys = [], []
    hop = round(event_hop_s(config.frontend) * config.frontend.sample_rate)
    for wf, a in zip(feats, audio):
        if task != "events":
            xs.append(torch.stack(wf.feats))
            ys.append(torch.from_numpy(np.repeat(a.target[None], len(wf.feats), axis=0)))
            continue
        for f, nf, start, length in zip(wf.feats, wf.frames, wf.starts, wf.lengths):
            steps, _ = steps_and_frames(nf, length, config)
            first = start // hop
            roll = a.target[first:first + steps * EVENT_REPEAT]
            if roll.shape[0] < steps * EVENT_REPEAT:
                roll = np.pad(roll, ((0, steps * EVENT_REPEAT - roll.shape[0]), (0, 0)))
            # BCE of a step repeated over its frames == BCE against the mean of their targets (+ a constant)
            xs.append(f[:steps])
            ys.append(torch.from_numpy(roll.reshape(steps, EVENT_REPEAT, -1).mean(axis=1)))
    return torch.cat(xs).float(), torch.cat(ys).float()


def clip_scores(task: str, head: Any, wf: WindowFeatures, config: Any, n_frames: int = 0) -> np.ndarray:
    """Clip probabilities as ``predict`` forms them (or the ``(n_frames, n)`` event probabilities)."""
    import torch

    with torch.inference_mode():
        if task == "scene":  # predict: mean over crops of each crop's softmax
            return torch.softmax(head(torch.stack(wf.feats)), dim=-1).numpy().mean(axis=0).astype(np.float32)
        if task == "tags":  # predict: window probabilities weighted by window length
            probs = torch.sigmoid(head(torch.stack(wf.feats))).numpy()
            w = np.asarray(wf.lengths, dtype=np.float64)
            return ((probs * w[:, None]).sum(axis=0) / w.sum()).astype(np.float32)
        pieces = []
        for f, nf, length in zip(wf.feats, wf.frames, wf.lengths):
            steps, n_ev = steps_and_frames(nf, length, config)
            pieces.append(torch.sigmoid(head(f[:steps])).repeat_interleave(EVENT_REPEAT, dim=0)[:n_ev].numpy())
        ev = np.concatenate(pieces)
        if ev.shape[0] < n_frames:  # the targets cover the end of the clip; the network's last step does not
            ev = np.pad(ev, ((0, n_frames - ev.shape[0]), (0, 0)))
        return ev[:n_frames]


def validation_loss(task: str, probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean cross-entropy of clip probabilities (scene: of the true class; tags and events: binary, per output).

    Computed in float64 from the float32 probabilities ``predict`` would give, with probabilities clamped to
    ``[1e-7, 1 - 1e-7]``; unlike accuracy it moves with every score, so it shows any difference in features.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    t = np.asarray(truth, dtype=np.float64)
    if task == "scene":
        return float(-np.mean(np.log(p[np.arange(p.shape[0]), t.astype(np.int64)])))
    return float(-np.mean(t * np.log(p) + (1.0 - t) * np.log1p(-p)))


def evaluate(task: str, head: Any, feats: list[WindowFeatures], audio: list[ClipAudio],
             config: Any) -> dict[str, float]:
    """Validation metrics of ``head`` on the cached head inputs ``feats`` of the clips ``audio``."""
    from dcasenet_hub import metrics

    scores = [clip_scores(task, head, wf, config, a.target.shape[0]) for wf, a in zip(feats, audio)]
    if task == "scene":
        probs = np.stack(scores)
        y = np.array([a.label_index for a in audio])
        # macro F1 over the classes that occur in the validation labels or predictions
        return {"accuracy": metrics.asc_accuracy(probs, y, n_crops=1, from_logits=False) / 100.0,
                "macro_f1": metrics.macro_f1(probs, y), "loss": validation_loss(task, probs, y)}
    if task == "tags":
        probs = np.stack(scores)
        truth = np.stack([a.target for a in audio])
        return {"lwlrap": metrics.lwlrap(truth, probs), "mAP": metrics.mean_average_precision(truth, probs),
                "loss": validation_loss(task, probs, truth)}
    s = metrics.sed_scores(scores, [a.target for a in audio], protocol="segment",
                           threshold=config.event_threshold, frame_hop=event_hop_s(config.frontend),
                           segment_length=1.0)
    loss = validation_loss(task, np.concatenate(scores), np.concatenate([a.target for a in audio]))
    return {"f1": float(s.f1), "error_rate": float(s.er), "precision": float(s.precision),
            "recall": float(s.recall), "loss": loss}


# ----------------------------------------------------------------------------------------------------------------
# Training crops
# ----------------------------------------------------------------------------------------------------------------


def crop_frames(crop_len: int, frontend: FrontendConfig) -> int:
    """Feature frames of ``crop_len`` pre-emphasised samples (centred STFT)."""
    return 1 + crop_len // frontend.hop_length


def clip_crop(a: ClipAudio, crop_len: int, config: Any, rng: np.random.Generator) -> torch.Tensor:
    """A random training crop ``(1, n_mels, frames)`` of a clip for the scene or tag head.

    A clip at least ``crop_len`` long gives the features of a uniformly drawn run of ``crop_len`` samples. A shorter
    clip gives its whole-clip features tiled by doubling up to the crop's frames (the inference rule for short
    inputs, with the crop's length in place of 40 frames), from a random frame on.
    """
    n = a.wave.shape[-1]
    if n >= crop_len:
        start = int(rng.integers(0, n - crop_len + 1))
        return window_mel(a.wave[start:start + crop_len], config)[0]
    frames = crop_frames(crop_len, config.frontend)
    mel, _ = window_mel(a.wave, config, min_frames=frames)
    start = int(rng.integers(0, mel.shape[-1] - frames + 1))
    return mel[..., start:start + frames]


def event_crop(a: ClipAudio, crop_len: int, config: Any,
               rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """A detection crop starting on the event grid, as features ``(1, n_mels, frames)``, with its targets."""
    hop = round(event_hop_s(config.frontend) * config.frontend.sample_rate)
    n_frames = crop_len // hop
    wave, roll = a.wave, a.target
    if wave.shape[-1] < crop_len:  # shorter than the crop: pad with silence, which holds no events
        wave = np.pad(wave, (0, crop_len - wave.shape[-1]))
    s = int(rng.integers(0, (wave.shape[-1] - crop_len) // hop + 1))
    target = roll[s:s + n_frames]
    if target.shape[0] < n_frames:
        target = np.pad(target, ((0, n_frames - target.shape[0]), (0, 0)))
    return window_mel(wave[s * hop:s * hop + crop_len], config)[0], target


__all__ = ["ClipAudio", "WindowFeatures", "clip_crop", "clip_scores", "crop_frames", "evaluate",
           "event_crop", "event_hop_s", "event_roll", "extract", "head_inputs", "load_clips", "probe_samples",
           "steps_and_frames", "validation_loss", "window_bounds", "window_mel"]
