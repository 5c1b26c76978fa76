"""Options of the inference pipeline: layers, poolings, hops, the per-call settings and the per-input :class:`Result`.

The checks here run before any audio is read, so a bad option fails at once with a message that lists the choices.

Example:
    >>> from dcasenet_hub.inference.settings import allowed_hops
    >>> allowed_hops()[-1]
    0.8
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from dcasenet_hub import audio as W
from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.errors import InputError
from dcasenet_hub.inference.outputs import Embeddings, Prediction

#: Default number of 5 s crops per forward pass (longer windows count proportionally).
DEFAULT_BATCH_SIZE = 8
#: Errors that mark one input as failed without stopping the others: the input cannot be read or analysed. Anything
#: else (a bug, a device fault, a bad option) propagates; running out of memory on one batch is handled where it runs.
INPUT_ERRORS = (InputError,)
#: Layers :func:`embed` can return: the recurrent output (default), the convolutional trunk's output averaged over
#: frequency (the GRUs' input), and the scene branch's 128-d code (one per 5 s scene crop).
LAYERS = ("gru", "conv", "scene")
#: Poolings of frame embeddings into the clip embedding.
POOLINGS = ("mean", "max", "mean+max")


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


def _check_event_options(threshold: float | None, median_filter: float | None, min_duration: float | None) -> None:
    """Range checks of the event options (``iterate`` and the folder jobs' ``BatchOptions`` share them)."""
    if threshold is not None and not (math.isfinite(float(threshold)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold}")
    for name, value in (("median_filter", median_filter), ("min_duration", min_duration)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0.0):
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value}")


def _hop_frames(hop: float | None, model: Any) -> int:
    """Validate ``hop`` (seconds) and return it in mel frames (a divisor of 40); ``None`` is the 0.8 s step."""
    if hop is None:
        return TIME_REDUCTION
    rate = _frame_rate(model)
    allowed = ", ".join(f"{h:g}" for h in allowed_hops(model))
    msg = (f"hop={hop!r} is not allowed: the timestamp hop must be a multiple of the {1 / rate:g} s mel hop that "
           f"divides the network's {TIME_REDUCTION / rate:g} s step; use one of {allowed} (seconds)")
    if isinstance(hop, bool) or not isinstance(hop, (int, float, np.integer, np.floating)):
        raise ValueError(msg)  # noqa: TRY004  (one documented error for every bad hop, as the CLI maps it)
    k = float(hop) * rate
    if not math.isfinite(k) or round(k) < 1 or abs(k - round(k)) > 1e-6 or TIME_REDUCTION % round(k):
        raise ValueError(msg)
    return round(k)


#: ``extra`` key set on the untrained-weights warnings (HEAR logs its own once per :func:`~dcasenet_hub.hear.load_model`
#: and filters these per batch).
UNTRAINED_RECORD = "dcasenet_hub_untrained"


def untrained_embeddings_warning(config: Any) -> str:
    """The warning for embeddings of a model whose config marks no task as trained (random or unknown weights)."""
    return (f"No task is marked as trained in the config of {_name(config)}: its embeddings may be meaningless "
            "(config.provenance says where the weights come from; `dcasenet-hub convert --tasks` records them).")


def untrained_heads_warning(config: Any, heads: Sequence[str]) -> str:
    """The warning for predictions from heads the model's config does not mark as trained."""
    return (f"Heads {', '.join(heads)} are not marked as trained in the config of {_name(config)}: their "
            "predictions may be meaningless (config.provenance says where the weights come from).")


def head_roles(config: Any) -> tuple[str | None, dict[str, str]]:
    """What a model's fine-tuning made of it, and what each head's outputs are.

    Returns:
        ``(task, roles)``: the fine-tuning task word (``"classification"``, ``"tagging"``, ``"detection"``) or
        ``None`` for a model that was not fine-tuned by dcasenet-hub; ``roles`` maps ``"scene"``, ``"tags"`` and
        ``"events"`` to ``"fine-tuned for <task> (your labels)"``, ``"base model <id>"``, ``"trained"`` or
        ``"not trained"``.

    Example:
        >>> from dcasenet_hub.config import ModelConfig
        >>> head_roles(ModelConfig(arch="v3", trained_tasks=("scene",)))
        (None, {'scene': 'trained', 'tags': 'not trained', 'events': 'not trained'})
    """
    record = (config.extra or {}).get("finetune") or {}
    task, head = record.get("task"), record.get("head")
    roles = {}
    for t in ("scene", "tags", "events"):
        if record and t == head:
            roles[t] = f"fine-tuned for {task} (your labels)"
        elif t not in config.trained_tasks:
            roles[t] = "not trained"
        else:
            roles[t] = f"base model {record['base_model']}" if record else "trained"
    return (task if record else None), roles


def _name(config: Any) -> str:
    """The model's id, or its architecture when it has none (short: the warnings name it, provenance is long)."""
    return str(config.model_id or f"a DcaseNet-{config.arch}")


#: Warnings already logged per model object: said once, not again at every call in a loop.
_WARNED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def warn_once(log: logging.Logger, model: Any, message: str) -> None:
    """Log ``message`` as a warning the first time it concerns ``model`` (per model object, not per call)."""
    try:
        seen = _WARNED.setdefault(model, set())
    except TypeError:  # not weak-referenceable: say it every time rather than never
        seen = set()
    if message in seen:
        return
    seen.add(message)
    log.warning(message, extra={UNTRAINED_RECORD: True})


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


@dataclass(frozen=True)
class _Settings:
    """Everything one call of :func:`~dcasenet_hub.inference.iterate` fixed, shared by its jobs and batcher."""

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
    heads: tuple[tuple[str, str], ...] = ()
    finetuned_task: str | None = None
    pad_tail: bool = False
    #: inputs longer than this (seconds) are decoded window by window (the pipeline's STREAM_THRESHOLD_S at the call)
    stream_threshold_s: float = 120.0
    #: resample and compute features on this device (the model's GPU); None: on the CPU
    feature_device: str | None = None

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
