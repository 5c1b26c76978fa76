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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from dcasenet_hub import audio as W
from dcasenet_hub._progress import progress_bar
from dcasenet_hub.config import EVENT_REPEAT, TIME_REDUCTION
from dcasenet_hub.devices import resolve_device
from dcasenet_hub.errors import AudioLoadError
from dcasenet_hub.inference.batching import _Batcher, _PreparedJobs
from dcasenet_hub.inference.jobs import _nearest, _pad_tail, _pool  # noqa: F401  (re-exported for tests and tools)
from dcasenet_hub.inference.outputs import Embeddings, Prediction, detect_events
from dcasenet_hub.inference.runner import BACKENDS, inference_runner
from dcasenet_hub.inference.settings import (
    DEFAULT_BATCH_SIZE,
    INPUT_ERRORS,
    LAYERS,
    POOLINGS,
    UNTRAINED_RECORD,
    EmbeddingSize,
    Result,
    _check_choice,
    _check_event_options,
    _frame_rate,  # noqa: F401
    _hop_frames,
    _Settings,
    allowed_hops,
    embedding_size,
    untrained_embeddings_warning,
    head_roles,
    untrained_heads_warning,
    warn_once,
)

logger = logging.getLogger(__name__)

#: Inputs longer than this (seconds) are decoded lazily, window by window, instead of ahead in a worker thread.
STREAM_THRESHOLD_S = 120.0
#: With the network on a CUDA GPU, resample and compute the features there too (in the decode workers), so the CPU
#: only decodes: the GPU front-end. Off by default until a GPU run has measured it and passed its equality test
#: there (tests/test_gpu.py); the default on CUDA is the front-end verified on a GPU (CPU decoding and features).
#: Set it True to opt in; read at each call (docs/performance.md, "The GPU front-end").
FEATURES_ON_MODEL_DEVICE = False


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "INPUT_ERRORS",
    "LAYERS",
    "POOLINGS",
    "UNTRAINED_RECORD",
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
    "untrained_embeddings_warning",
]


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
    _check_event_options(threshold, median_filter, min_duration)
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
        heads=tuple(head_roles(cfg)[1].items()),
        finetuned_task=head_roles(cfg)[0],
        frame_hop_s=model.frame_hop_s,
        event_hop_s=min(hop_frames, TIME_REDUCTION // EVENT_REPEAT) / cfg.frontend.frame_rate,
        sample_rate=sample_rate,
        hop_frames=hop_frames,
        pad_tail=bool(pad_tail),
        stream_threshold_s=float(STREAM_THRESHOLD_S),  # read at each call, so it can be changed (tests force it)
        layer=layer,
        pooling=pooling,
    )
    if settings.untrained:
        warn_once(logger, model, untrained_heads_warning(cfg, settings.untrained))
    if embeddings and not predictions and not cfg.trained_tasks:
        warn_once(logger, model, untrained_embeddings_warning(cfg))
    dev = _resolve_device(model, device)
    settings = dataclasses.replace(settings, feature_device=_feature_device(dev, backend))
    was_training = model.training
    # workers share the CPU with the network when it runs there (onnxruntime always does): one torch thread each
    network_on_cpu = dev.type == "cpu" or backend == "onnxruntime"
    pool = (ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="dcasenet-decode",
                               initializer=_single_threaded_torch if network_on_cpu else None) if workers else None)
    bar = None
    try:
        # the first inputs start decoding now, while the runner is built
        jobs = _PreparedJobs(inputs, settings, pool, prefetch=max(2, 2 * int(workers)))
        # the fastest exact path (batch-norm folded, channels-last; cached per model), or autocast for bf16/fp16
        runner = inference_runner(model, dtype=dtype, device=dev, backend=backend)
        crop_frames = cfg.frontend.num_frames(round(cfg.windows.scene_window_s * cfg.frontend.sample_rate) + 1)
        batcher = _Batcher(runner, dev, budget=int(batch_size) * crop_frames, settings=settings)
        bar = progress_bar(enabled=progress, total=len(inputs), desc="inputs", unit="file", leave=True)
        model.eval()
        for job in jobs:
            if job.error is not None:
                yield job.result()
                bar.update(1)
                continue
            window_bar = progress_bar(enabled=progress and job.streamed, total=len(job.plan),
                                      desc=Path(job.source).name, unit="window")
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
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        model.train(was_training)



def _single_threaded_torch() -> None:
    """Run a decode worker's torch ops (resampling, STFT, mel) on one intra-op thread.

    Only while the network runs on the CPU. The setting is per thread: the network keeps all of torch's threads.
    Without it every worker's ops start a second OpenMP team as wide as the machine, whose threads compete with the
    network's for the same cores (measured in docs/performance.md).
    """
    torch.set_num_threads(1)


def _as_list(x: Any) -> tuple[bool, list[Any]]:
    if isinstance(x, (list, tuple)):
        return False, list(x)
    if type(x).__name__ == "Column" and type(x).__module__.startswith("datasets"):
        return False, list(x)  # a Hugging Face datasets column (dataset["audio"]): its items, in order
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


def _feature_device(dev: torch.device, backend: str) -> str | None:
    """Where the decode workers resample and compute features: the model's CUDA device, else the CPU (None).

    Only CUDA: other accelerators (MPS) lack the float64 the exact resampling there needs. onnxruntime runs on the
    CPU, so its features stay there too.
    """
    if dev.type == "cuda" and backend == "torch" and FEATURES_ON_MODEL_DEVICE:
        return str(dev)
    return None
