"""What one call of the pipeline fixed (:class:`CallSettings`), embedding sizes and the per-input :class:`Result`.

Example:
    >>> from dcasenet_hub import build_model
    >>> embedding_size(build_model("v2"), layer="scene", pooling="mean+max")
    EmbeddingSize(frame=128, clip=256)
"""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dcasenet_hub import audio as W
from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.errors import InputError
from dcasenet_hub.inference.options import InferenceOptions, options_error
from dcasenet_hub.inference.outputs import Embeddings, Prediction

#: Default number of 5 s crops per forward pass (longer windows count proportionally).
DEFAULT_BATCH_SIZE: int = InferenceOptions.batch_size
#: Errors that mark one input as failed without stopping the others: the input cannot be read or analysed. Anything
#: else (a bug, a device fault, a bad option) propagates; running out of memory on one batch is handled where it runs.
INPUT_ERRORS = (InputError,)


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


#: The three vocabularies in the order of :attr:`CallSettings.labels`, as messages name them.
VOCABULARIES = ("scene", "tag", "event")


class LabelSelection(NamedTuple):
    """What the label options resolve to for one model (:func:`select_labels`).

    Attributes:
        keep: Per vocabulary (scene, tag, event), the indices of the kept classes in the network's outputs.
        labels: Per vocabulary, the kept class names (the model's spelling), in the network's order.
        class_thresholds: ``{class name: threshold}`` of the kept tag and event classes that have one (the
            model's spelling).
    """

    keep: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    labels: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    class_thresholds: dict[str, float]


def select_labels(vocabularies: Sequence[Sequence[str]], options: InferenceOptions) -> LabelSelection:
    """Resolve ``labels``, ``exclude_labels`` and ``class_thresholds`` against a model's (scene, tag, event) names.

    A name matches a class exactly, else case-insensitively when exactly one class of a vocabulary matches (it is
    then read as the model's spelling); a name of several vocabularies applies to each. ``labels`` keeps the named
    classes of each vocabulary it names and leaves a vocabulary it names no class of whole; ``exclude_labels`` then
    drops its classes. Thresholds of classes that are not kept do not apply.

    Raises:
        OptionsError: a name that is no class of the model (the message gives close matches, or every class), a
            case-insensitive name that matches several classes, a threshold for a scene (scenes are decided by the
            highest probability), or a selection that leaves a vocabulary no class.

    Example:
        >>> vocab = (("park", "bus"), ("Bark", "Knock"), ("dog", "knock"))
        >>> sel = select_labels(vocab, InferenceOptions(labels=["DOG", "Knock"], class_thresholds={"dog": 0.6}))
        >>> sel.labels, sel.class_thresholds
        ((('park', 'bus'), ('Knock',), ('dog',)), {'dog': 0.6})
    """
    vocab = tuple(tuple(v) for v in vocabularies)
    keep = [set(range(len(v))) for v in vocab]
    if options.labels is not None:
        named = [set() for _ in vocab]
        for name in options.labels:
            for v, i in _match(name, vocab, "labels", options.labels):
                named[v].add(i)
        keep = [n if n else k for n, k in zip(named, keep)]
    for name in options.exclude_labels or ():
        for v, i in _match(name, vocab, "exclude_labels", options.exclude_labels):
            keep[v].discard(i)
    for v, kept in enumerate(keep):
        if not kept:
            option = "exclude_labels" if options.exclude_labels else "labels"
            raise options_error(option, getattr(options, option),
                                f"leaves no {VOCABULARIES[v]} class; keep at least one of {len(vocab[v])}")
    thresholds: dict[str, float] = {}
    for name, p in (options.class_thresholds or {}).items():
        matches = _match(name, vocab, "class_thresholds", {name: p})
        if all(v == 0 for v, _ in matches):
            raise options_error("class_thresholds", {name: p}, f"{name!r} is a scene: the scene is the most "
                                "probable one, not decided by a threshold; give tag or event names")
        for v, i in matches:
            if v and i in keep[v]:
                thresholds[vocab[v][i]] = p
    order = tuple(tuple(sorted(k)) for k in keep)
    return LabelSelection(order, tuple(tuple(vocab[v][i] for i in k) for v, k in enumerate(order)),  # type: ignore
                          thresholds)


def _match(name: str, vocab: tuple[tuple[str, ...], ...], option: str, value: object) -> list[tuple[int, int]]:
    """``(vocabulary, class index)`` of each class ``name`` stands for (see :func:`select_labels`)."""
    exact = [(v, names.index(name)) for v, names in enumerate(vocab) if name in names]
    if exact:
        return exact
    folded = name.casefold()
    found = []
    for v, names in enumerate(vocab):
        hits = [i for i, x in enumerate(names) if x.casefold() == folded]
        if len(hits) > 1:
            raise options_error(option, value, f"{name!r} matches the {VOCABULARIES[v]} classes "
                                f"{', '.join(names[i] for i in hits)} by case only; write one of them exactly")
        found += [(v, hits[0])] if hits else []
    if found:
        return found
    every = [x for names in vocab for x in names]
    close = difflib.get_close_matches(name, every, n=5, cutoff=0.6) or difflib.get_close_matches(
        folded, [x.casefold() for x in every], n=5, cutoff=0.6)
    if close:
        hint = f"did you mean {_either(close)}?"
    else:
        hint = "its classes: " + "; ".join(f"{VOCABULARIES[v]}s {', '.join(names)}" for v, names in enumerate(vocab))
    raise options_error(option, value, f"{name!r} is not a class of this model ({hint}); use the model's names "
                                       "(model.labels lists them)")


def _either(names: Iterable[str]) -> str:
    names = [repr(n) for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


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


class _Everything(set):
    def __contains__(self, item: object) -> bool:
        return True


def silence_untrained_warnings(model: Any) -> None:
    """Count every untrained-weights warning about ``model`` as said already (for a tool that runs random weights
    on purpose, such as the benchmark: their speed is the point, not their outputs)."""
    _WARNED[model] = _Everything()


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
    #: the kept class names per vocabulary (scene, tag, event): :func:`select_labels`
    labels: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    untrained: tuple[str, ...]
    frame_hop_s: float
    event_hop_s: float
    sample_rate: int | None
    hop_frames: int = TIME_REDUCTION
    provenance: str | None = None
    trained_tasks: tuple[str, ...] = ()
    heads: tuple[tuple[str, str], ...] = ()
    finetuned_task: str | None = None
    #: resample and compute features on this device (the model's GPU); None: on the CPU
    feature_device: str | None = None
    #: indices of the kept classes in the network's outputs per vocabulary (None: all)
    keep: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    #: per-class thresholds of the kept tag and event classes, as ``(name, threshold)`` pairs in name order
    class_thresholds: tuple[tuple[str, float], ...] = ()

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
