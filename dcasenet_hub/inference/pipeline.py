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
    >>> from dcasenet_hub.inference.pipeline import embed, predict
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

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dcasenet_hub import audio as W
from dcasenet_hub.config import EVENT_REPEAT, TIME_REDUCTION
from dcasenet_hub.devices import resolve_device
from dcasenet_hub.errors import AudioLoadError
from dcasenet_hub.inference.outputs import Embeddings, Prediction, detect_events
from dcasenet_hub.inference.runner import BACKENDS, inference_runner

logger = logging.getLogger(__name__)

#: Default number of 5 s crops per forward pass (longer windows count proportionally).
DEFAULT_BATCH_SIZE = 8
#: Inputs longer than this (seconds) are decoded lazily, window by window, instead of ahead in a worker thread.
STREAM_THRESHOLD_S = 120.0
#: Errors that mark one input as failed without stopping the others.
INPUT_ERRORS = (AudioLoadError, W.InputError, ValueError, RuntimeError, OSError)
#: Layers :func:`embed` can return: the recurrent output (default), the convolutional trunk's output averaged over
#: frequency (the GRUs' input), and the scene branch's 128-d code (one per 5 s scene crop).
LAYERS = ("gru", "conv", "scene")
#: Poolings of frame embeddings into the clip embedding.
POOLINGS = ("mean", "max", "mean+max")

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LAYERS",
    "POOLINGS",
    "AudioLoadError",
    "EmbeddingSize",
    "Embeddings",
    "Prediction",
    "Result",
    "allowed_hops",
    "detect_events",
    "embed",
    "embedding_size",
    "iterate",
    "predict",
]


class EmbeddingSize(NamedTuple):
    """Sizes of the vectors :func:`embed` returns for one choice of layer and pooling.

    Attributes:
        frame: Size of each frame embedding (``Embeddings.frame.shape[1]``).
        clip: Size of the clip embedding (``Embeddings.clip.shape[0]``; twice ``frame`` for ``"mean+max"``).
    """

    frame: int
    clip: int


def embedding_size(model: Any, *, layer: str = "gru", pooling: str = "mean") -> EmbeddingSize:
    """Frame and clip embedding sizes of ``model`` for a layer and a pooling.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet` (any architecture).
        layer: One of :data:`LAYERS`: ``"gru"`` (512), ``"conv"`` (512) or ``"scene"`` (128).
        pooling: One of :data:`POOLINGS`: ``"mean"``, ``"max"`` or ``"mean+max"`` (clip twice the frame size).

    Returns:
        :class:`EmbeddingSize` ``(frame, clip)``.

    Raises:
        ValueError: unknown layer or pooling (the message lists the choices).

    Example:
        >>> from dcasenet_hub import build_model
        >>> embedding_size(build_model("v2"), layer="scene", pooling="mean+max")
        EmbeddingSize(frame=128, clip=256)
    """
    _check_choice("layer", layer, LAYERS)
    _check_choice("pooling", pooling, POOLINGS)
    if layer == "gru":
        size = int(model.embedding_dim)
    elif layer == "conv":
        blocks = ((model.conv_block4_1, model.conv_block4_2) if model.arch == "v3" else (model.conv_block4,))
        size = sum(int(b.conv2.out_channels) for b in blocks)
    else:
        size = int(model.code_ASC.out_features)
    return EmbeddingSize(size, 2 * size if pooling == "mean+max" else size)


def allowed_hops(model: Any | None = None) -> tuple[float, ...]:
    """Timestamp hops (seconds) that :func:`embed` and :func:`predict` accept, finest first.

    A hop is a whole number of 20 ms mel frames that divides the network's 0.8 s step (40 frames); the frames at a
    hop of ``k`` mel frames come from ``40 / k`` forward passes on the features shifted by ``0, k, 2k ...`` frames.

    Example:
        >>> allowed_hops()
        (0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4, 0.8)
    """
    rate = _frame_rate(model)
    return tuple(round(k / rate, 6) for k in range(1, TIME_REDUCTION + 1) if TIME_REDUCTION % k == 0)


def _frame_rate(model: Any | None) -> float:
    if model is None:
        from dcasenet_hub.config import FrontendConfig

        return float(FrontendConfig().frame_rate)
    return float(model.config.frontend.frame_rate)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")


def _hop_frames(hop: float | None, model: Any) -> int:
    """Validate ``hop`` (seconds) and return it in mel frames (a divisor of 40); ``None`` is the 0.8 s step."""
    if hop is None:
        return TIME_REDUCTION
    rate = _frame_rate(model)
    allowed = ", ".join(f"{h:g}" for h in allowed_hops(model))
    msg = (f"hop={hop!r} is not allowed: the timestamp hop must be a multiple of the {1 / rate:g} s mel hop that "
           f"divides the network's {TIME_REDUCTION / rate:g} s step; use one of {allowed} (seconds)")
    if isinstance(hop, bool) or not isinstance(hop, (int, float, np.integer, np.floating)):
        raise ValueError(msg)
    k = float(hop) * rate
    if not math.isfinite(k) or round(k) < 1 or abs(k - round(k)) > 1e-6 or TIME_REDUCTION % round(k):
        raise ValueError(msg)
    return int(round(k))


#: ``extra`` key set on the untrained-weights warnings (HEAR logs its own once per :func:`~dcasenet_hub.hear.load_model`
#: and filters these per batch).
UNTRAINED_RECORD = "dcasenet_hub_untrained"


def untrained_embeddings_warning(config: Any) -> str:
    """The warning for embeddings of a model whose config marks no task as trained (random or unknown weights)."""
    return (f"No task is marked as trained in this model's config (provenance: {config.provenance}): its embeddings "
            "may come from untrained weights and be meaningless. Load trained weights, e.g. "
            "from_pretrained('dcasenet-v3'), or record the trained tasks when converting (`dcasenet-hub convert "
            "--tasks ...`).")


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


#: Inference backends: the PyTorch fast path, or the network exported to ONNX and run by onnxruntime (CPU, fp32).


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
    hop: float | None = None,
    layer: str = "gru",
    pooling: str = "mean",
    backend: str = "torch",
    pad_tail: bool = False,
) -> Embeddings | list[Embeddings]:
    """Frame (every 0.8 s, or every ``hop``) and clip embeddings of audio of any length.

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
        backend: ``"torch"`` (default) or ``"onnxruntime"`` (CPU, fp32; needs the ``onnx`` extra; outputs within
            1e-5 of torch's; the ``gru`` layer only).
        hop: Time between frame embeddings in seconds (default 0.8, the network's step): one of
            :func:`allowed_hops` (0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4, 0.8). A hop of ``0.8 / P`` runs ``P`` exact
            forward passes on the features shifted by whole 20 ms frames and merges their frames in time order, so
            it costs ``P`` times as much. Frame ``i`` is centred at ``0.39 + i * hop`` s (one regular grid, across
            the 60 s windows too); every ``P``-th frame is the default output, bit for bit. Not for
            ``layer="scene"``.
        layer: ``"gru"`` (default: the recurrent output, 512-d), ``"conv"`` (the convolutional trunk's output
            averaged over frequency, 512-d, the GRUs' input) or ``"scene"`` (the scene branch's 128-d code, one per
            5 s scene crop as :func:`predict` uses, timestamps at the crop centres).
        pooling: Clip embedding from the 0.8 s-step frames (whatever ``hop``): ``"mean"`` (default), ``"max"`` or
            ``"mean+max"`` (the two concatenated, twice the size). :func:`embedding_size` gives the sizes.
        pad_tail: Frames end at the last full 0.8 s step, as the authors' network does (a 10 s clip's last frame
            ends at 9.6 s) unless this is True: then the last event window's normalised log-mel is padded with zeros
            (each band's mean) up to a whole number of steps, so the frames (and events) reach the end of the file.
            The padded step, and the clip embedding that averages it, see partly padding. Works with any ``hop``.
            Default False: outputs bit-identical to the network's.

    Returns:
        :class:`Embeddings` (or a list of them).

    Raises:
        AudioLoadError: a file is missing, unreadable, empty, not audio or contains NaN/inf.
        ValueError: a waveform is invalid or shorter than 0.1 s, ``sample_rate`` is missing, or ``hop``, ``layer``
            or ``pooling`` is not one of the allowed values (the message lists them).

    Example:
        >>> emb = model.embed("street.wav")                  # doctest: +SKIP
        >>> emb.frame.shape, emb.clip.shape                  # doctest: +SKIP
        ((12, 512), (512,))
        >>> fine = model.embed("street.wav", hop=0.1, pooling="mean+max")   # doctest: +SKIP
        >>> fine.frame.shape, fine.frame_times[:3], fine.clip.shape         # doctest: +SKIP
        ((93, 512), array([0.39, 0.49, 0.59], dtype=float32), (1024,))
    """
    single, inputs = _as_list(x)
    out = _collect(iterate(model, inputs, sample_rate=sample_rate, embeddings=True, predictions=False,
                           device=device, dtype=dtype, batch_size=batch_size, progress=progress, workers=workers,
                           hop=hop, layer=layer, pooling=pooling, backend=backend, pad_tail=pad_tail),
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
    hop: float | None = None,
    backend: str = "torch",
    pad_tail: bool = False,
) -> Prediction | list[Prediction]:
    """Scene, tag and event predictions with label names and timestamps.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        x: A file path, a waveform or a list of these (see :func:`embed`).
        sample_rate: Rate of waveform inputs in Hz.
        threshold: Event decision threshold (default: ``model.config.event_threshold``, the authors' 0.3).
        median_filter: Median filter over the binary event activity, in seconds (``None``: none).
        min_duration: Drop events shorter than this many seconds.
        device, dtype, batch_size, progress, workers, backend: As in :func:`embed`.
        hop: Time between the network's event scores in seconds (default 0.8), computed by shifted passes as in
            :func:`embed`. Event probabilities stay on a 100 ms grid (on a ``hop`` grid for hops under 0.1 s); each
            grid frame takes the score of the 0.8 s step whose centre is nearest to its own (at the default this is
            the authors' 8-fold repetition). Scenes and tags do not change with ``hop``.
        pad_tail: Event probabilities and events end at the last full 0.8 s step (9.6 s for a 10 s clip) unless
            True: then they reach the end of the file (see :func:`embed`; the tags of the last window see the
            padded step too; scenes do not change).

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
                           device=device, dtype=dtype, batch_size=batch_size, progress=progress, workers=workers,
                           hop=hop, backend=backend, pad_tail=pad_tail),
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
    hop: float | None = None,
    layer: str = "gru",
    pooling: str = "mean",
    backend: str = "torch",
    pad_tail: bool = False,
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
        hop: Timestamp hop of frame embeddings and event scores (see :func:`embed` and :func:`predict`).
        layer: Embedding layer (see :func:`embed`).
        pooling: Clip pooling (see :func:`embed`).
        backend: ``"torch"`` or ``"onnxruntime"`` (see :func:`embed`).
        pad_tail: Let frames and events reach the end of each input (see :func:`embed`); default False.

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
    hop_frames = _hop_frames(hop, model)
    _check_choice("layer", layer, LAYERS)
    _check_choice("pooling", pooling, POOLINGS)
    _check_choice("backend", backend, BACKENDS)
    if backend == "onnxruntime" and embeddings and layer != "gru":
        raise ValueError(f"layer={layer!r} is not in the exported ONNX graph; use layer='gru' or backend='torch'")
    if embeddings and layer == "scene" and hop_frames != TIME_REDUCTION:
        raise ValueError(f"hop={hop!r} does not apply to layer='scene' (one code per 5 s scene crop); "
                         "leave hop at its default or use layer='gru' or 'conv'")
    if pad_tail and embeddings and layer == "scene" and not predictions:
        raise ValueError("pad_tail does not apply to layer='scene' (one code per 5 s scene crop, which always "
                         "covers the end); drop pad_tail or use layer='gru' or 'conv'")
    kinds: set[str] = {W.SCENE, W.EVENT} if predictions else set()
    if embeddings:
        kinds.add(W.SCENE if layer == "scene" else W.EVENT)
    cfg = model.config
    settings = _Settings(
        frontend=cfg.frontend,
        windows=cfg.windows,
        kinds=frozenset(kinds),
        embeddings=embeddings,
        predictions=predictions,
        threshold=cfg.event_threshold if threshold is None else float(threshold),
        median_filter=median_filter,
        min_duration=min_duration,
        model_id=cfg.model_id,
        labels=(tuple(cfg.scene_labels), tuple(cfg.tag_labels), tuple(cfg.event_labels)),
        untrained=tuple(t for t in ("scene", "tags", "events") if t not in cfg.trained_tasks) if predictions else (),
        provenance=cfg.provenance,
        trained_tasks=tuple(cfg.trained_tasks),
        frame_hop_s=model.frame_hop_s,
        event_hop_s=min(hop_frames, TIME_REDUCTION // EVENT_REPEAT) / cfg.frontend.frame_rate,
        sample_rate=sample_rate,
        hop_frames=hop_frames,
        pad_tail=bool(pad_tail),
        layer=layer,
        pooling=pooling,
    )
    if settings.untrained:
        logger.warning("Heads %s are not marked as trained in this model's config (provenance: %s); their "
                       "predictions may be meaningless.", ", ".join(settings.untrained), cfg.provenance,
                       extra={UNTRAINED_RECORD: True})
    if embeddings and not predictions and not cfg.trained_tasks:
        logger.warning(untrained_embeddings_warning(cfg), extra={UNTRAINED_RECORD: True})
    dev = _resolve_device(model, device)
    # the fastest exact path (batch-norm folded, channels-last; cached per model), or autocast for bf16/fp16
    runner = inference_runner(model, dtype=dtype, device=dev, backend=backend)
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
                    if not window.shift:  # shifted passes of a finer hop are not windows of the plan
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
    hop_frames: int = TIME_REDUCTION
    layer: str = "gru"
    pooling: str = "mean"
    provenance: str | None = None
    trained_tasks: tuple[str, ...] = ()
    pad_tail: bool = False

    @property
    def passes(self) -> int:
        """Forward passes per event window (shifted by ``0, k, 2k ...`` mel frames for a hop of ``k`` frames)."""
        return TIME_REDUCTION // self.hop_frames

    def tasks(self, kinds: frozenset[str]) -> tuple[str, ...]:
        tasks: set[str] = set()
        if W.SCENE in kinds:
            tasks.add("scene")
        if W.EVENT in kinds:
            if self.predictions:
                tasks |= {"events", "tags"}
            if self.embeddings and self.layer != "scene":
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
    """:func:`dcasenet_hub.devices.resolve_device` (default: where the model is), and the model moved there."""
    dev = resolve_device(device, model=model)
    if dev != next(model.parameters()).device:
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
        self.scene: dict[int, dict[str, Any]] = {}
        self.event: dict[int, dict[str, Any]] = {}
        self.shifted: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # event window -> shift -> outputs
        self.fine_frames: dict[int, int] = {}  # event window -> frames at the fine hop (set with its passes)
        self.n_samples = 0
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
        self.n_samples = n
        # a padded tail must not reach the scene head: scene crops and event windows stay separate windows then
        self.plan = W.plan(n, sample_rate=sr, windows=s.windows, kinds=s.kinds, share=not s.pad_tail)
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
        held: tuple[W.Window, np.ndarray] | None = None  # an event window waiting for the next one's first samples
        for window, samples in W.cut(blocks, self.plan):
            try:
                window.mel, window.frames = W.features(samples, frontend=s.frontend,
                                                       min_frames=s.windows.min_frames)
                if s.pad_tail and window.kinds == {W.EVENT}:
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

    def _wants_passes(self, window: W.Window) -> bool:
        s = self.settings
        return (s.passes > 1 and W.EVENT in window.kinds and window.frames >= s.windows.min_frames
                and (s.predictions or s.layer != "scene"))

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
            base = log_mel(torch.from_numpy(samples), config=no_pre, normalize=False)
            ext = log_mel(torch.from_numpy(np.concatenate([samples, lookahead[:ahead]])), config=no_pre,
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
            return Result(self.index, self.source, error=self.error, duration_s=self.duration_s, warning=warning)
        s = self.settings
        sr = s.frontend.sample_rate
        input_sr = self.reader.sample_rate if self.reader is not None else None
        res = Result(self.index, self.source, duration_s=self.duration_s, warning=warning)
        events = [self.event[i] for i in sorted(self.event)]
        scenes = [self.scene[i] for i in sorted(self.scene)]
        if s.embeddings:
            if s.layer == "scene":
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
            res.embeddings = Embeddings(
                frame=frame,
                frame_times=times,
                clip=_pool(steps, s.pooling),
                model_id=s.model_id, layer=s.layer, hop_s=hop_s, duration_s=float(self.duration_s or 0.0),
                source=self.source, sample_rate=input_sr, pooling=s.pooling, provenance=s.provenance,
                trained_tasks=s.trained_tasks,
            )
        if s.predictions:
            crop_probs = np.stack([c["probs"] for c in scenes]).astype(np.float32)
            weights = np.array([e["length"] for e in events], dtype=np.float64)
            window_tags = np.stack([e["tag_probs"] for e in events]).astype(np.float32)
            tags = (window_tags * weights[:, None]).sum(0) / weights.sum()
            ev = np.concatenate([self._event_grid(i) for i in sorted(self.event)]).astype(np.float32)
            duration = float(self.duration_s or 0.0)
            if s.pad_tail:  # the padded step's grid frames past the end of the input
                ev = ev[:max(1, math.ceil(duration / s.event_hop_s - 1e-9))]
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
                scene_window_starts=np.array([c["start"] / sr for c in scenes], dtype=np.float32),
                scene_window_s=float(s.windows.scene_window_s),
                tag_window_probs=window_tags,
                tag_window_starts=np.array([e["start"] / sr for e in events], dtype=np.float32),
                threshold=s.threshold, median_filter=s.median_filter, min_duration=s.min_duration,
                event_hop_s=s.event_hop_s, duration_s=duration, model_id=s.model_id,
                untrained_tasks=s.untrained, source=self.source, sample_rate=input_sr,
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
        self.pending: dict[tuple[int, tuple[str, ...], bool], list[tuple[_Job, W.Window]]] = {}
        self.pending_frames = 0

    def add(self, job: _Job, window: W.Window) -> list[_Job]:
        frames = int(window.mel.shape[-1])
        # shifted passes never share a batch with the windows themselves, so these batch as without a finer hop
        key = (frames, self.settings.tasks(window.kinds), window.shift > 0)
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

    def _run(self, key: tuple[int, tuple[str, ...], bool]) -> list[_Job]:
        items = self.pending.pop(key)
        frames, tasks, _ = key
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
        conv = self.settings.embeddings and self.settings.layer == "conv" and "embeddings" in tasks
        with torch.inference_mode():
            out = self.model(mel, tasks=tasks, conv_embeddings=True) if conv else self.model(mel, tasks=tasks)
        res: dict[str, np.ndarray] = {}
        if out.scene_logits is not None:
            res["scene_probs"] = torch.softmax(out.scene_logits.float(), dim=-1).cpu().numpy()
        if out.tag_logits is not None:
            res["tag_probs"] = torch.sigmoid(out.tag_logits.float()).cpu().numpy()
        if out.event_probs is not None:
            res["event_probs"] = out.event_probs.float().cpu().numpy()
        if out.scene_embeddings is not None and self.settings.embeddings and self.settings.layer == "scene":
            res["scene_code"] = out.scene_embeddings.float().cpu().numpy()
        if out.frame_embeddings is not None:
            frames = out.conv_embeddings if self.settings.layer == "conv" else out.frame_embeddings
            if frames is None:
                raise ValueError(f"layer={self.settings.layer!r} is not available from this model's backend "
                                 f"({type(self.model).__name__}); use layer='gru' or the torch backend")
            res["frame_embeddings"] = frames.float().cpu().numpy()
            res["frame_times"] = out.frame_times.float().cpu().numpy()
        return res
