"""Embeddings and predictions from audio of any length: files, waveforms or lists of either.

:func:`embed`, :func:`predict` and :func:`iterate` cut each input into windows matching how the network was trained
and evaluated: 5 s scene crops every 2.5 s, the last aligned to the end (a 10 s clip gets exactly the authors' three
test-time crops), and non-overlapping 60 s windows for events, tags and embeddings (75 steps of 0.8 s, so outputs
concatenate on one grid), each normalised on its own. Inputs under 40 frames are tiled by doubling, under 0.1 s
refused. Files are read and resampled in blocks, so memory stays bounded whatever the duration; windows of equal
length from different inputs share batches. The steps and their reasons: docs/outputs.md, "Windowing".

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

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from dcasenet_hub import audio as W
from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.config import EVENT_REPEAT, TIME_REDUCTION
from dcasenet_hub.devices import resolve_device
from dcasenet_hub.errors import AudioLoadError
from dcasenet_hub.inference.batching import Batcher, PreparedJobs
from dcasenet_hub.inference.options import (
    LAYERS,
    POOLINGS,
    InferenceOptions,
    allowed_hops,
    options_error,
)
from dcasenet_hub.inference.outputs import Embeddings, Prediction, detect_events
from dcasenet_hub.inference.runner import inference_runner
from dcasenet_hub.inference.settings import (
    DEFAULT_BATCH_SIZE,
    INPUT_ERRORS,
    UNTRAINED_RECORD,
    CallSettings,
    EmbeddingSize,
    Result,
    embedding_size,
    untrained_embeddings_warning,
    head_roles,
    untrained_heads_warning,
    select_labels,
    warn_once,
)

logger = logging.getLogger(__name__)



__all__ = [
    "DEFAULT_BATCH_SIZE",
    "INPUT_ERRORS",
    "LAYERS",
    "POOLINGS",
    "UNTRAINED_RECORD",
    "AudioLoadError",
    "EmbeddingSize",
    "Embeddings",
    "InferenceOptions",
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
    options: InferenceOptions | None = None,
    hop: float | None = InferenceOptions.unset("hop"),
    layer: str = InferenceOptions.unset("layer"),
    pooling: str = InferenceOptions.unset("pooling"),
    pad_tail: bool = InferenceOptions.unset("pad_tail"),
    dtype: torch.dtype | str | None = InferenceOptions.unset("dtype"),
    backend: str = InferenceOptions.unset("backend"),
    device: str | torch.device | None = InferenceOptions.unset("device"),
    batch_size: int = InferenceOptions.unset("batch_size"),
    workers: int = InferenceOptions.unset("workers"),
    progress: bool | None = InferenceOptions.unset("progress"),
    feature_device: str = InferenceOptions.unset("feature_device"),
    stream_threshold_s: float = InferenceOptions.unset("stream_threshold_s"),
) -> Embeddings | list[Embeddings]:
    """Frame (every 0.8 s, or every ``hop``) and clip embeddings of audio of any length.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet` (put in eval mode for the call).
        x: A file path, a waveform (numpy array or torch tensor, ``(samples,)``, ``(channels, samples)`` or
            ``(frames, channels)`` as ``soundfile.read`` gives, with up to 64 channels on the last axis; channels are
            averaged) or a list of these (returns a list, in the same order).
        sample_rate: Rate of waveform inputs in Hz (required for them; files use their own rate).
        options: An :class:`InferenceOptions` (default: all defaults); it declares every option below, with its
            default and what it allows.
        hop, layer, pooling, pad_tail, dtype, backend, device, batch_size, workers, progress, feature_device,
            stream_threshold_s: The option of that name, over ``options``.

    Returns:
        :class:`Embeddings` (or a list of them).

    Raises:
        AudioLoadError: a file is missing, unreadable, empty, not audio or contains NaN/inf.
        OptionsError: an option's value is not allowed (a ``ValueError``; the message names it and what is allowed).
        ValueError: a waveform is invalid or shorter than 0.1 s, or ``sample_rate`` is missing.

    Example:
        >>> emb = model.embed("street.wav")                  # doctest: +SKIP
        >>> emb.frame.shape, emb.clip.shape                  # doctest: +SKIP
        ((12, 512), (512,))
        >>> fine = model.embed("street.wav", hop=0.1, pooling="mean+max")   # doctest: +SKIP
        >>> fine.frame.shape, fine.frame_times[:3], fine.clip.shape         # doctest: +SKIP
        ((93, 512), array([0.39, 0.49, 0.59], dtype=float32), (1024,))
    """
    opts = InferenceOptions.merge(options, InferenceOptions.given(locals()), caller="embed")  # the keywords given win
    single, inputs = _as_list(x)
    out = _collect(iterate(model, inputs, sample_rate=sample_rate, embeddings=True, predictions=False, options=opts),
                   len(inputs), "embeddings")
    return out[0] if single else out


def predict(
    model: Any,
    x: Any,
    *,
    sample_rate: int | None = None,
    options: InferenceOptions | None = None,
    threshold: float | None = InferenceOptions.unset("threshold"),
    class_thresholds: Mapping[str, float] | None = InferenceOptions.unset("class_thresholds"),
    labels: Sequence[str] | None = InferenceOptions.unset("labels"),
    exclude_labels: Sequence[str] | None = InferenceOptions.unset("exclude_labels"),
    median_filter: float | None = InferenceOptions.unset("median_filter"),
    min_duration: float | None = InferenceOptions.unset("min_duration"),
    hop: float | None = InferenceOptions.unset("hop"),
    pad_tail: bool = InferenceOptions.unset("pad_tail"),
    dtype: torch.dtype | str | None = InferenceOptions.unset("dtype"),
    backend: str = InferenceOptions.unset("backend"),
    device: str | torch.device | None = InferenceOptions.unset("device"),
    batch_size: int = InferenceOptions.unset("batch_size"),
    workers: int = InferenceOptions.unset("workers"),
    progress: bool | None = InferenceOptions.unset("progress"),
    feature_device: str = InferenceOptions.unset("feature_device"),
    stream_threshold_s: float = InferenceOptions.unset("stream_threshold_s"),
) -> Prediction | list[Prediction]:
    """Scene, tag and event predictions with label names and timestamps.

    ``hop`` changes the network's event scores (event probabilities stay on a 100 ms grid, on a ``hop`` grid for
    hops under 0.1 s; each grid frame takes the score of the step whose centre is nearest); scenes and tags do not
    change with it. ``pad_tail`` lets event probabilities and events reach the end of the file.

    ``labels`` keeps only the named classes of each vocabulary it names (a vocabulary it does not name stays whole)
    and ``exclude_labels`` drops classes: every array, label list and event list of the result holds the kept
    classes only, with their probabilities as computed (not renormalised; ``top_scene`` is the best kept scene).
    ``class_thresholds`` gives classes their own event threshold over ``threshold``.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        x: A file path, a waveform or a list of these (see :func:`embed`).
        sample_rate: Rate of waveform inputs in Hz.
        options: An :class:`InferenceOptions` (default: all defaults).
        threshold, class_thresholds, labels, exclude_labels, median_filter, min_duration, hop, pad_tail, dtype,
            backend, device, batch_size, workers, progress, feature_device, stream_threshold_s: The option of that
            name, over ``options``.

    Returns:
        :class:`Prediction` (or a list of them).

    Raises:
        OptionsError: an option's value is not allowed, or a class name the model does not have (the message
            gives close matches).

    Example:
        >>> pred = model.predict("street.wav", median_filter=0.5)   # doctest: +SKIP
        >>> pred.top_scene, pred.events[:2]                          # doctest: +SKIP
        ('street_traffic', [(0.0, 3.2, 'engine'), (4.1, 4.9, 'dog')])
        >>> dogs = model.predict("street.wav", labels=["dog", "Bark"], class_thresholds={"dog": 0.6})  # doctest: +SKIP
        >>> dogs.event_labels, dogs.tag_labels, dogs.class_thresholds                                  # doctest: +SKIP
        (('dog',), ('Bark',), {'dog': 0.6})
    """
    opts = InferenceOptions.merge(options, InferenceOptions.given(locals()), caller="predict")  # the keywords given win
    single, inputs = _as_list(x)
    out = _collect(iterate(model, inputs, sample_rate=sample_rate, embeddings=False, predictions=True, options=opts),
                   len(inputs), "prediction")
    return out[0] if single else out


def iterate(
    model: Any,
    inputs: Sequence[Any],
    *,
    sample_rate: int | None = None,
    embeddings: bool = True,
    predictions: bool = False,
    options: InferenceOptions | None = None,
    hop: float | None = InferenceOptions.unset("hop"),
    layer: str = InferenceOptions.unset("layer"),
    pooling: str = InferenceOptions.unset("pooling"),
    pad_tail: bool = InferenceOptions.unset("pad_tail"),
    threshold: float | None = InferenceOptions.unset("threshold"),
    class_thresholds: Mapping[str, float] | None = InferenceOptions.unset("class_thresholds"),
    labels: Sequence[str] | None = InferenceOptions.unset("labels"),
    exclude_labels: Sequence[str] | None = InferenceOptions.unset("exclude_labels"),
    median_filter: float | None = InferenceOptions.unset("median_filter"),
    min_duration: float | None = InferenceOptions.unset("min_duration"),
    dtype: torch.dtype | str | None = InferenceOptions.unset("dtype"),
    backend: str = InferenceOptions.unset("backend"),
    device: str | torch.device | None = InferenceOptions.unset("device"),
    batch_size: int = InferenceOptions.unset("batch_size"),
    workers: int = InferenceOptions.unset("workers"),
    progress: bool | None = InferenceOptions.unset("progress"),
    feature_device: str = InferenceOptions.unset("feature_device"),
    stream_threshold_s: float = InferenceOptions.unset("stream_threshold_s"),
) -> Iterator[Result]:
    """Process many inputs, yielding one :class:`Result` per input as soon as it is done (completion order).

    A bad input (unreadable, empty, NaN, too short...) yields a result with ``error`` set and never stops the
    others. The folder jobs and the command line use it; :func:`embed` and :func:`predict` are built on it.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        inputs: File paths and/or waveforms.
        sample_rate: Rate of waveform inputs in Hz.
        embeddings: Compute :class:`Embeddings`.
        predictions: Compute :class:`Prediction`.
        options: An :class:`InferenceOptions` (default: all defaults).
        hop, layer, pooling, pad_tail, threshold, class_thresholds, labels, exclude_labels, median_filter,
            min_duration, dtype, backend, device, batch_size, workers, progress, feature_device, stream_threshold_s:
            The option of that name, over ``options`` (the label options change predictions only, see
            :func:`predict`).

    Raises:
        OptionsError: an option's value is not allowed, does not apply to what is computed, or names a class the
            model does not have (raised when the iteration starts).
        TypeError: an input is neither a path nor a numpy array / torch tensor.

    Example:
        >>> for r in iterate(model, ["a.wav", "b.wav"], predictions=True):   # doctest: +SKIP
        ...     print(r.source, r.prediction.top_scene if r.ok else r.error)
    """
    opts = InferenceOptions.merge(options, InferenceOptions.given(locals()), caller="iterate")  # the keywords given win
    if not (embeddings or predictions):
        raise ValueError("Ask for embeddings=True and/or predictions=True")
    opts.check_outputs(embeddings=embeddings, predictions=predictions)
    hop_frames = opts.hop_frames(model)
    kinds: set[str] = {W.SCENE, W.EVENT} if predictions else set()
    if embeddings:
        kinds.add(W.SCENE if opts.layer == "scene" else W.EVENT)
    if sample_rate is not None and inputs and all(isinstance(i, (str, Path)) for i in inputs):
        raise options_error("sample_rate", sample_rate, "applies to waveform inputs; an audio file is read at its "
                                                        "own rate: leave sample_rate out")
    cfg = model.config
    # before the device or any worker: a misspelt class name fails at once
    selection = select_labels((cfg.scene_labels, cfg.tag_labels, cfg.event_labels), opts)
    dev = _resolve_device(model, opts.device)
    settings = CallSettings(
        options=opts,
        frontend=cfg.frontend,
        windows=cfg.windows,
        kinds=frozenset(kinds),
        embeddings=embeddings,
        predictions=predictions,
        threshold=cfg.event_threshold if opts.threshold is None else opts.threshold,
        model_id=cfg.model_id,
        labels=selection.labels,
        keep=selection.keep,
        class_thresholds=tuple(sorted(selection.class_thresholds.items())),
        untrained=tuple(t for t in ("scene", "tags", "events") if t not in cfg.trained_tasks) if predictions else (),
        provenance=cfg.provenance,
        trained_tasks=tuple(cfg.trained_tasks),
        heads=tuple(head_roles(cfg)[1].items()),
        finetuned_task=head_roles(cfg)[0],
        frame_hop_s=model.frame_hop_s,
        event_hop_s=min(hop_frames, TIME_REDUCTION // EVENT_REPEAT) / cfg.frontend.frame_rate,
        sample_rate=sample_rate,
        hop_frames=hop_frames,
        feature_device=_feature_device(dev, opts),
    )
    if settings.untrained:
        warn_once(logger, model, untrained_heads_warning(cfg, settings.untrained))
    if embeddings and not predictions and not cfg.trained_tasks:
        warn_once(logger, model, untrained_embeddings_warning(cfg))
    workers = opts.workers
    # workers share the CPU with the network when it runs there (onnxruntime always does): one torch thread each
    network_on_cpu = dev.type == "cpu" or opts.backend == "onnxruntime"
    pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcasenet-decode",
                               initializer=_single_threaded_torch if network_on_cpu else None) if workers else None)
    show = show_progress(opts.progress)
    bar = None
    abandoned = False
    # a generator still open when the interpreter exits is closed while modules are torn down (their globals are
    # None by then); the decode threads have ended before that, and no model will run again
    finalizing = sys.is_finalizing
    evaluating = False
    if network_on_cpu:
        # before the first decode worker starts: each sets one thread for itself, and torch keeps that value
        # process-wide for every thread that has not run a parallel op yet, a caller's new thread included. So the
        # first call reads its caller's count, calls that start meanwhile run their network with it, and the last to
        # end sets it back for the threads started later.
        _overlapping.enter(_PROCESS, torch.get_num_threads, torch.set_num_threads)
    try:
        # the first inputs start decoding now, while the runner is built
        jobs = PreparedJobs(inputs, settings, pool, prefetch=max(2, 2 * workers))
        # the fastest exact path (batch-norm folded, channels-last; cached per model), or autocast for bf16/fp16
        runner = inference_runner(model, dtype=opts.dtype, device=dev, backend=opts.backend)
        crop_frames = cfg.frontend.num_frames(round(cfg.windows.scene_window_s * cfg.frontend.sample_rate) + 1)
        batcher = Batcher(runner, dev, budget=opts.batch_size * crop_frames, settings=settings)
        bar = progress_bar(enabled=show and (len(inputs) > 1 or opts.progress is True), total=len(inputs),
                           desc="inputs", unit="file", leave=True)
        _overlapping.enter(model, lambda: model.training, lambda _: model.eval())
        evaluating = True
        for job in jobs:
            if job.error is not None:
                yield job.result()
                bar.update(1)
                continue
            window_bar = progress_bar(enabled=show and job.streamed, total=len(job.plan),
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
    except GeneratorExit:
        # closed before its end, maybe by the garbage collector, which runs in any thread at any point (inside
        # threading's own locks, too): joining the decode threads there could wait forever, so they end on their own
        abandoned = True
        raise
    finally:
        if not finalizing():
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.shutdown(wait=not abandoned, cancel_futures=True)
            if network_on_cpu:
                _overlapping.leave(_PROCESS, torch.set_num_threads)
            if evaluating:
                _overlapping.leave(model, model.train)


class _Overlapping:
    """What overlapping calls share (threads, unfinished generators): the first to start saves the state, every call
    applies the saved value while it runs, and the last to end gives it back.

    Each call saving and restoring on its own would let the last to end restore what an earlier one had set.
    """

    def __init__(self) -> None:
        # re-entrant: a generator closed by the garbage collector may leave while this thread is entering
        self._lock = threading.RLock()
        self._calls: WeakIdKeyDictionary = WeakIdKeyDictionary()  # key -> [calls running, saved state]

    def enter(self, key: Any, save: Callable[[], Any], apply: Callable[[Any], Any]) -> None:
        with self._lock:
            calls = self._calls.get(key)
            if calls is None:
                calls = self._calls[key] = [0, save()]
            calls[0] += 1
            apply(calls[1])

    def leave(self, key: Any, restore: Callable[[Any], Any]) -> None:
        with self._lock:
            calls = self._calls.get(key)
            if calls is None:
                return
            calls[0] -= 1
            if calls[0] == 0:
                del self._calls[key]
                restore(calls[1])


class _Process:
    """The key of what the whole process shares (torch's thread count)."""


_overlapping, _PROCESS = _Overlapping(), _Process()


def _single_threaded_torch() -> None:
    """Run a decode worker's torch ops (resampling, STFT, mel) on one intra-op thread.

    Only while the network runs on the CPU; the network keeps the caller's threads (see :func:`iterate`).
    Without it every worker's ops start a second OpenMP team as wide as the machine, whose threads compete with the
    network's for the same cores (measured in docs/performance.md). The count is read first, which fixes this
    thread's own: torch would otherwise set it from the process-wide value at its first parallel op.
    """
    torch.get_num_threads()
    torch.set_num_threads(1)


def _as_list(x: Any) -> tuple[bool, list[Any]]:
    if isinstance(x, (list, tuple)):
        return False, list(x)
    if type(x).__name__ == "Column" and type(x).__module__.startswith("datasets"):
        return False, list(x)  # a Hugging Face datasets column (dataset["audio"]): its items, in order
    return True, [x]


def _collect(results: Generator[Result, None, None], n: int, attr: str) -> list[Any]:
    out: list[Any] = [None] * n
    # closed before the error leaves: its traceback would otherwise keep the generator suspended, with its decode
    # threads, open files and the model's mode, for as long as the caller keeps the error
    with contextlib.closing(results):
        for r in results:
            if r.error is not None:
                if n > 1 and hasattr(r.error, "add_note"):  # Python 3.11+: shown under the error
                    r.error.add_note("embed() and predict() stop at the first input that fails; iterate() goes on "
                                     "and gives each input's result or error")
                raise r.error
            out[r.index] = getattr(r, attr)
    return out


def _resolve_device(model: Any, device: str | torch.device | None) -> torch.device:
    """:func:`dcasenet_hub.devices.resolve_device` (default: where the model is), and the model moved there."""
    dev = resolve_device(device, model=model)
    if dev != next(model.parameters()).device:
        model.to(dev)
    return dev


def _feature_device(dev: torch.device, opts: InferenceOptions) -> str | None:
    """Where the decode workers resample and compute features: the model's CUDA device when
    ``feature_device="model"`` asks for it, else the CPU (None).

    The CPU is the default on CUDA too: it is the front-end verified on a GPU; the GPU front-end stays one option
    away until a GPU run has measured it and passed its equality test there (tests/test_gpu.py). Only CUDA: other
    accelerators (MPS) lack the float64 the exact resampling there needs. onnxruntime runs on the CPU, so its
    features stay there too.
    """
    if dev.type == "cuda" and opts.backend == "torch" and opts.feature_device == "model":
        return str(dev)
    return None
