"""What one call of the pipeline fixed (:class:`CallSettings`), embedding sizes and the per-input :class:`Result`.

Example:
    >>> from dcasenet_hub import build_model
    >>> embedding_size(build_model("v2"), layer="scene", pooling="mean+max")
    EmbeddingSize(frame=128, clip=256)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from dcasenet_hub import audio as W
from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.errors import AudioLoadError
from dcasenet_hub.inference.options import InferenceOptions
from dcasenet_hub.inference.outputs import Embeddings, Prediction

#: Default number of 5 s crops per forward pass (longer windows count proportionally).
DEFAULT_BATCH_SIZE: int = InferenceOptions.batch_size
#: Errors that mark one input as failed without stopping the others.
INPUT_ERRORS = (AudioLoadError, W.InputError, ValueError, RuntimeError, OSError)


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
        OptionsError: unknown layer or pooling (the message lists the choices).

    Example:
        >>> from dcasenet_hub import build_model
        >>> embedding_size(build_model("v2"), layer="scene", pooling="mean+max")
        EmbeddingSize(frame=128, clip=256)
    """
    InferenceOptions(layer=layer, pooling=pooling)  # checks both
    if layer == "gru":
        size = int(model.embedding_dim)
    elif layer == "conv":
        blocks = ((model.conv_block4_1, model.conv_block4_2) if model.arch == "v3" else (model.conv_block4,))
        size = sum(int(b.conv2.out_channels) for b in blocks)
    else:
        size = int(model.code_ASC.out_features)
    return EmbeddingSize(size, 2 * size if pooling == "mean+max" else size)


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


@dataclass(frozen=True)
class CallSettings:
    """Everything one call of :func:`~dcasenet_hub.inference.iterate` fixed, shared by its jobs and batcher: the
    options, and what they resolve to for this model (the threshold, the hop in frames, the feature device)."""

    options: InferenceOptions
    frontend: Any
    windows: Any
    kinds: frozenset[str]
    embeddings: bool
    predictions: bool
    #: the event threshold: the option's, else the model's
    threshold: float
    model_id: str | None
    labels: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    untrained: tuple[str, ...]
    frame_hop_s: float
    event_hop_s: float
    sample_rate: int | None
    hop_frames: int = TIME_REDUCTION
    provenance: str | None = None
    trained_tasks: tuple[str, ...] = ()
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
            if self.embeddings and self.options.layer != "scene":
                tasks.add("embeddings")
        return tuple(sorted(tasks))
