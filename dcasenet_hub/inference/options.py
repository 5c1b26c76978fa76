"""Every option of :func:`~dcasenet_hub.inference.embed`, ``predict`` and ``iterate``, declared once.

:class:`InferenceOptions` holds each option with its default, what it allows and one line of doc (the field's
``metadata``), and checks itself when built, so a bad value fails before any audio is read with an
:class:`~dcasenet_hub.errors.OptionsError` naming the option, the value and what is allowed. The functions take
``options=`` plus the same names as keywords, which win over it; the folder jobs' ``BatchOptions`` holds one; the
command line maps its flags onto it.

Example:
    >>> opts = InferenceOptions(hop=0.1, layer="conv")
    >>> opts.replace(pooling="max").pooling, opts.hop_frames()
    ('max', 5)
    >>> InferenceOptions(threshold=1.5)
    Traceback (most recent call last):
    ...
    dcasenet_hub.errors.OptionsError: threshold=1.5: must be a probability between 0 and 1, or None
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dcasenet_hub._options import DeclaredOptions, document, option, options_error
from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.devices import resolve_device, short_dtype_name
from dcasenet_hub.errors import OptionsError

#: Layers :func:`embed` can return: the recurrent output (default), the convolutional trunk's output averaged over
#: frequency (the GRUs' input), and the scene branch's 128-d code (one per 5 s scene crop).
LAYERS = ("gru", "conv", "scene")
#: Poolings of frame embeddings into the clip embedding.
POOLINGS = ("mean", "max", "mean+max")
#: Inference backends: PyTorch (optimised copy) or onnxruntime (CPU, fp32 or int8, the ``onnx`` extra).
BACKENDS = ("torch", "onnxruntime")
#: The dtype that runs the onnxruntime graph with its trunk convolutions quantized (:mod:`dcasenet_hub.export.quantize`).
INT8 = "int8"
#: Where the decode workers compute features: the CPU, or the model's CUDA device (the GPU front-end).
FEATURE_DEVICES = ("cpu", "model")
#: Which result files record an option for resuming (the options that change what they hold).
EMBED, PREDICT = "embed", "predict"


class ClassThresholds(Mapping[str, float]):
    """A read-only ``{class name: threshold}`` in name order: the form :attr:`InferenceOptions.class_thresholds`
    keeps, so equal mappings compare equal and the frozen options stay hashable.

    Example:
        >>> t = ClassThresholds({"dog": 0.6, "alarm": 0.2})
        >>> t, t == {"alarm": 0.2, "dog": 0.6}, hash(t) == hash(ClassThresholds({"alarm": 0.2, "dog": 0.6}))
        ({'alarm': 0.2, 'dog': 0.6}, True, True)
    """

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        self._items = dict(sorted(thresholds.items()))

    def __getitem__(self, name: str) -> float:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


@document
@dataclass(frozen=True)
class InferenceOptions(DeclaredOptions):
    """How :func:`~dcasenet_hub.inference.embed`, ``predict`` and ``iterate`` compute: each field is declared here
    once, with its default, what it allows and one line of doc (its ``metadata``; :meth:`describe` lists them, and
    they end this docstring). A hop of ``0.8 / P`` runs ``P`` exact passes on features shifted by whole 20 ms frames
    (``P`` times the cost), frame ``i`` centred at ``0.39 + i * hop`` s. ``pad_tail`` pads the last window's
    normalised log-mel with zeros up to a whole 0.8 s step, so frames and events reach the end of the file (else they
    end at the last full step, as the authors' network does: 9.6 s for a 10 s clip).

    Raises:
        OptionsError: a value the option does not allow (a ``ValueError``; the message names option, value and
            what is allowed).
    """

    hop: float | None = option(
        None, "seconds between frame embeddings / event scores (None: the network's 0.8 s step)",
        "one of allowed_hops(): 0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4, 0.8", (EMBED, PREDICT))
    layer: str = option(
        "gru", "embedding layer: gru (recurrent output, 512-d), conv (trunk, 512-d), scene (128-d per 5 s crop)",
        f"one of {', '.join(map(repr, LAYERS))}", (EMBED,))
    pooling: str = option(
        "mean", "clip embedding from the 0.8 s-step frames (mean+max: both, twice the size)",
        f"one of {', '.join(map(repr, POOLINGS))}", (EMBED,))
    pad_tail: bool = option(
        False, "let frames and events reach the end of the input (see above)", "True or False", (EMBED, PREDICT))
    threshold: float | None = option(
        None, "event threshold of every class (None: the model's, 0.3)", "a probability between 0 and 1, or None",
        (PREDICT,))
    class_thresholds: Mapping[str, float] | None = option(
        None, "per-class thresholds over threshold: events use them, score's tag F1 too (tag or event names, "
        "matched as labels are)", "None or a mapping {class name: probability between 0 and 1}", (PREDICT,))
    labels: tuple[str, ...] | None = option(
        None, "keep only these classes in the predictions: scene, tag or event names (one in several vocabularies "
        "applies to each); a vocabulary none of them names keeps all its classes; probabilities are not "
        "renormalised", "None or one or more class names of the model (exact, else case-insensitive when unique)",
        (PREDICT,))
    exclude_labels: tuple[str, ...] | None = option(
        None, "drop these classes from the predictions (after labels)",
        "None or class names of the model, none of them also in labels, leaving each vocabulary a class", (PREDICT,))
    median_filter: float | None = option(
        None, "median filter over the binary event activity, seconds", "a number of seconds >= 0, or None",
        (PREDICT,))
    min_duration: float | None = option(
        None, "drop events shorter than this, seconds", "a number of seconds >= 0, or None", (PREDICT,))
    dtype: str | None = option(
        None, "compute precision, autocast below fp32 (None: fp32; an optimised model keeps its own); int8: the "
        "onnxruntime graph with quantized trunk convolutions (CPU, sets backend onnxruntime); outputs are float32",
        "None, fp32, bf16, fp16, int8 or a torch.dtype", (EMBED, PREDICT))
    backend: str = option(
        "torch", "what runs the network (onnxruntime: CPU, fp32 or int8, layer gru, the onnx extra)",
        f"one of {', '.join(map(repr, BACKENDS))}", (EMBED, PREDICT))
    device: Any = option(
        None, "where to compute (None: the model's device; a model loaded by name goes to CUDA when available)",
        "None, auto, cpu, cuda, cuda:N, mps or a torch.device")
    batch_size: int = option(8, "5 s crops per forward pass (a 60 s window counts as 12)", "a whole number >= 1")
    workers: int = option(
        2, "threads decoding and resampling inputs ahead of the network (0: in the calling thread)",
        "a whole number >= 0")
    progress: bool | None = option(
        None, "tqdm bars (None: when stderr is a terminal, for several inputs or a long one)", "True, False or None")
    feature_device: str = option(
        "cpu", "where decode workers resample and compute features: cpu (verified on GPUs), or model (the model's "
        "CUDA device: the GPU front-end, not yet run on a GPU; docs/performance.md)", "one of 'cpu', 'model'")
    stream_threshold_s: float = option(
        120.0, "inputs longer than this are decoded window by window (memory bounded by one window); shorter ones "
        "are decoded whole, ahead of the network", "a number of seconds > 0")

    def __post_init__(self) -> None:
        def fail(name: str, problem: str | None = None) -> OptionsError:
            return options_error(name, getattr(self, name), problem or f"must be {self.allowed(name)}")

        if self.layer not in LAYERS:
            raise fail("layer")
        if self.pooling not in POOLINGS:
            raise fail("pooling")
        if self.backend not in BACKENDS:
            raise fail("backend")
        hop_frames(self.hop)
        if not isinstance(self.pad_tail, bool):
            raise fail("pad_tail")
        if self.threshold is not None and not (_real(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise fail("threshold")
        object.__setattr__(self, "class_thresholds", _class_thresholds(self.class_thresholds))
        for name in ("labels", "exclude_labels"):
            object.__setattr__(self, name, _class_names(name, getattr(self, name)))
        both = sorted(set(self.labels or ()) & set(self.exclude_labels or ()))
        if both:
            raise fail("exclude_labels", f"names {', '.join(map(repr, both))}, which labels keeps; a class is either "
                                         "kept or dropped: remove it from one of them")
        for name in ("median_filter", "min_duration"):
            value = getattr(self, name)
            if value is not None and not (_real(value) and value >= 0.0):
                raise fail(name)
        try:
            dtype = None if self.dtype is None else _dtype_name(self.dtype)
        except ValueError:
            raise fail("dtype") from None
        if dtype == INT8:  # int8 exists only as the quantized onnxruntime graph
            object.__setattr__(self, "backend", "onnxruntime")
        if self.device is not None:
            try:
                resolve_device(self.device)
            except ValueError as exc:
                raise fail("device", str(exc).removeprefix(f"device {self.device}: ")) from None
        for name, low in (("batch_size", 1), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise fail(name)
        if self.progress not in (None, True, False):
            raise fail("progress")
        if self.feature_device not in FEATURE_DEVICES:
            raise fail("feature_device")
        if not (_real(self.stream_threshold_s) and self.stream_threshold_s > 0):
            raise fail("stream_threshold_s")
        object.__setattr__(self, "stream_threshold_s", float(self.stream_threshold_s))
        if self.backend == "onnxruntime":
            runs = "dtype='int8'" if dtype == INT8 else "the onnxruntime backend"
            if dtype not in (None, "fp32", INT8):
                raise fail("dtype", "the onnxruntime backend runs fp32 or int8; leave dtype unset or use "
                                    "backend='torch'")
            if self.device is not None and str(self.device) not in ("auto", "cpu"):
                raise fail("device", f"{runs} runs on the CPU; leave device unset or use "
                                     + ("another dtype" if dtype == INT8 else "backend='torch'"))
            if self.layer != "gru":
                raise fail("layer", f"is not in the exported ONNX graph that {runs} runs; use layer='gru' or "
                                    + ("another dtype" if dtype == INT8 else "backend='torch'"))
            # int8 quantizes the exported graph, which needs onnx; running a graph needs only onnxruntime
            missing = [m for m in ("onnxruntime", "onnx")[:2 if dtype == INT8 else 1]
                       if importlib.util.find_spec(m) is None]
            if missing:
                name = "dtype" if dtype == INT8 else "backend"
                raise fail(name, 'needs the onnx extra: pip install "dcasenet-hub[onnx]"')
        # one form per value, so equal options compare (and are recorded) equal
        for name in ("hop", "threshold", "median_filter", "min_duration"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "workers", int(self.workers))

    @classmethod
    def merge(cls, options: InferenceOptions | None, overrides: Mapping[str, Any], *,
              caller: str) -> InferenceOptions:
        """``options`` (default: all defaults) with ``overrides`` (the options a call gave) applied over it.

        Raises:
            TypeError: ``options`` is not an :class:`InferenceOptions`, or an override is not an option name.
            OptionsError: an invalid value, or ``backend="torch"`` given with ``dtype="int8"``.
        """
        merged = super().merge(options, overrides, caller=caller)
        # only the overrides tell a backend given as torch from the default, which int8 replaces by onnxruntime
        if merged.dtype == INT8 and overrides.get("backend") == "torch":
            raise options_error("backend", "torch", "dtype='int8' runs only on the onnxruntime backend; leave "
                                                    "backend unset or use backend='onnxruntime'")
        return merged

    def check_outputs(self, *, embeddings: bool, predictions: bool) -> None:
        """The checks that depend on what is computed (a scene code has no finer hop and always covers the end).

        Raises:
            OptionsError: ``hop`` or ``pad_tail`` with ``layer="scene"`` embeddings.
        """
        if not (embeddings and self.layer == "scene"):
            return
        if self.hop is not None and hop_frames(self.hop) != TIME_REDUCTION:
            raise options_error("hop", self.hop, "does not apply to layer='scene' (one code per 5 s scene crop); "
                                                "leave hop at its default or use layer='gru' or 'conv'")
        if self.pad_tail and not predictions:
            raise options_error("pad_tail", True, "does not apply to layer='scene' (one code per 5 s scene crop, "
                                                 "which always covers the end); drop pad_tail or use layer='gru' "
                                                 "or 'conv'")

    def hop_frames(self, model: Any | None = None) -> int:
        """The hop in mel frames for ``model`` 's front-end (default: the standard 20 ms frames); see
        :func:`hop_frames`."""
        return hop_frames(self.hop, model)

    def to_dict(self) -> dict[str, Any]:
        """Every option as plain JSON values (``device`` as text, class names as lists, thresholds as a dict)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["device"] = None if self.device is None else str(self.device)
        return out

    def recorded(self, task: str) -> dict[str, Any]:
        """The options that change ``task`` 's results (``"embed"`` or ``"predict"``), as its output files record
        them for resuming (``dtype`` by its short name, ``"fp32"`` for ``None``).

        Example:
            >>> InferenceOptions(median_filter=0.5).recorded("embed")
            {'hop': None, 'layer': 'gru', 'pooling': 'mean', 'pad_tail': False, 'dtype': 'fp32', 'backend': 'torch'}
        """
        # plain JSON values: a record read back from a file compares equal to the options that wrote it
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
               if task in f.metadata["records"]}
        out["dtype"] = _dtype_name(self.dtype)
        return out


def is_int8(dtype: Any) -> bool:
    """Whether ``dtype`` asks for the int8 graph (any case, surrounding spaces ignored)."""
    return isinstance(dtype, str) and dtype.strip().lower() == INT8


def _dtype_name(dtype: Any) -> str:
    """``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"`` for any accepted spelling (``None`` is fp32)."""
    return INT8 if is_int8(dtype) else short_dtype_name(dtype)


def _plain(value: Any) -> Any:
    """An option's value as JSON holds it: tuples as lists, :class:`ClassThresholds` as a dict."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, ClassThresholds):
        return dict(value)
    return value


def _class_names(option: str, value: Any) -> tuple[str, ...] | None:
    """``labels`` / ``exclude_labels`` in one form: a sorted tuple of distinct names (a string is one name), so equal
    selections compare equal whatever their order or container; ``None`` for none (an empty ``exclude_labels``)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple, set, frozenset)):
        raise options_error(option, value, "must be a list of class names (strings), or None")
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        raise options_error(option, value, f"holds {bad[0]!r}; class names are non-empty strings")
    if not value:
        if option == "labels":
            raise options_error(option, value, "keeps no class; name at least one, or pass None to keep all")
        return None
    return tuple(sorted(set(value)))


def _class_thresholds(value: Any) -> ClassThresholds | None:
    """``class_thresholds`` in one form (:class:`ClassThresholds` of floats); ``None`` for an empty mapping."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise options_error("class_thresholds", value, "must be a mapping {class name: probability}, or None")
    for name, p in value.items():
        if not isinstance(name, str) or not name.strip():
            raise options_error("class_thresholds", value, f"has the key {name!r}; class names are non-empty "
                                                           "strings")
        if not (_real(p) and 0.0 <= p <= 1.0):
            # the one entry, so a message about a long mapping (a file of them) says which class is wrong
            raise options_error("class_thresholds", {name: p}, f"the threshold of {name!r} must be a probability "
                                                               "between 0 and 1")
    return ClassThresholds({name: float(p) for name, p in value.items()}) if value else None


def _real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) and math.isfinite(float(value))


def frame_rate(model: Any | None = None) -> float:
    """Mel frames per second of ``model`` 's front-end (default: the standard front-end's 50)."""
    if model is None:
        from dcasenet_hub.config import FrontendConfig

        return float(FrontendConfig().frame_rate)
    return float(model.config.frontend.frame_rate)


def allowed_hops(model: Any | None = None) -> tuple[float, ...]:
    """Timestamp hops (seconds) that :func:`embed` and :func:`predict` accept, finest first.

    A hop is a whole number of 20 ms mel frames that divides the network's 0.8 s step (40 frames); the frames at a
    hop of ``k`` mel frames come from ``40 / k`` forward passes on the features shifted by ``0, k, 2k ...`` frames.

    Example:
        >>> allowed_hops()
        (0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4, 0.8)
    """
    rate = frame_rate(model)
    return tuple(round(k / rate, 6) for k in range(1, TIME_REDUCTION + 1) if TIME_REDUCTION % k == 0)


def hop_frames(hop: float | None, model: Any | None = None) -> int:
    """``hop`` (seconds) in mel frames of ``model`` 's front-end (a divisor of 40); ``None`` is the 0.8 s step.

    Raises:
        OptionsError: ``hop`` is not one of :func:`allowed_hops` (the message lists them).
    """
    if hop is None:
        return TIME_REDUCTION
    rate = frame_rate(model)
    allowed = ", ".join(f"{h:g}" for h in allowed_hops(model))
    error = options_error("hop", hop, f"must be a multiple of the {1 / rate:g} s mel hop that divides the network's "
                                     f"{TIME_REDUCTION / rate:g} s step: one of {allowed} (seconds)")
    if not _real(hop):
        raise error
    k = float(hop) * rate
    if round(k) < 1 or abs(k - round(k)) > 1e-6 or TIME_REDUCTION % round(k):
        raise error
    return round(k)


__all__ = ["BACKENDS", "FEATURE_DEVICES", "INT8", "LAYERS", "POOLINGS", "ClassThresholds", "InferenceOptions",
           "allowed_hops", "frame_rate", "hop_frames", "is_int8", "options_error"]
