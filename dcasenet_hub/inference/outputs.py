"""Result objects of :func:`dcasenet_hub.inference.pipeline.embed` / ``predict`` and their file formats (private module).

The public names (:class:`Embeddings`, :class:`Prediction`, :func:`detect_events`) are re-exported by
:mod:`dcasenet_hub.inference.pipeline`; docs/outputs.md documents every key and file format.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub._io import atomic_write, atomic_write_text
from dcasenet_hub.metrics.annotations import DCASE_COLUMNS, RAVEN_COLUMNS

#: Version of the on-disk formats (stored in every file's ``meta``).
FORMAT_VERSION = 1


def _round(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd))


def _short_source(source: str | None) -> str:
    """The file name of a source path for reprs (``<array i>`` and ``None`` as they are)."""
    if source is None:
        return "?"
    return source if source.startswith("<") else Path(source).name


def _names(names: tuple[str, ...] | None) -> list[str] | None:
    return None if names is None else list(names)


def _shape(a: Any) -> str:
    return str(tuple(np.shape(a)))


# ----------------------------------------------------------------------------------------------------------------
# Event lists
# ----------------------------------------------------------------------------------------------------------------


def detect_events(
    probs: np.ndarray,
    labels: tuple[str, ...] | list[str],
    *,
    hop_s: float,
    threshold: float | Sequence[float] | np.ndarray = 0.3,
    class_thresholds: Mapping[str, float] | None = None,
    median_filter: float | None = None,
    min_duration: float | None = None,
    duration_s: float | None = None,
) -> list[tuple[float, float, str]]:
    """Turn frame probabilities into an event list ``[(onset_s, offset_s, label), ...]`` sorted by onset.

    A frame is active where ``prob > threshold`` (the authors' rule), with each class's own threshold where
    ``class_thresholds`` (or a per-class ``threshold``) gives one; optionally the binary activity is median
    filtered over ``median_filter`` seconds (an odd number of frames, i.e. a majority vote), then runs of active
    frames become events and events shorter than ``min_duration`` seconds are dropped.

    Args:
        probs: ``(T, C)`` probabilities on a grid of ``hop_s`` seconds (frame ``t`` covers ``[t*hop, (t+1)*hop)``).
        labels: ``C`` class names.
        hop_s: Frame hop in seconds.
        threshold: Decision threshold of every class, or one per class (``C`` values).
        class_thresholds: ``{label: threshold}`` over ``threshold`` for those classes; names that are not in
            ``labels`` do not apply (e.g. tag classes of a :class:`Prediction` 's thresholds).
        median_filter: Median filter length in seconds (``None`` or ``0``: none).
        min_duration: Minimum event length in seconds.
        duration_s: Clip offsets to this duration.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((10, 2)); p[2:5, 1] = 0.9; p[6, 0] = 0.5
        >>> detect_events(p, ["a", "b"], hop_s=0.1)
        [(0.2, 0.5, 'b'), (0.6, 0.7, 'a')]
        >>> detect_events(p, ["a", "b"], hop_s=0.1, class_thresholds={"a": 0.6})
        [(0.2, 0.5, 'b')]
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probs must be (T, {len(labels)}), got {probs.shape}")
    per_class = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),)).copy()
    for c, label in enumerate(labels):
        if class_thresholds and label in class_thresholds:
            per_class[c] = float(class_thresholds[label])
    active = probs > per_class.astype(np.float32)
    if median_filter:
        k = max(1, round(median_filter / hop_s))
        k += 1 - k % 2  # odd
        if k > 1 and active.shape[0]:
            pad = k // 2
            padded = np.pad(active.astype(np.int8), ((pad, pad), (0, 0)), mode="edge")
            windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=0)
            active = windows.sum(axis=-1) > pad
    events: list[tuple[float, float, str]] = []
    for c, label in enumerate(labels):
        col = np.concatenate([[False], active[:, c], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(col))
        for on, off in zip(edges[0::2], edges[1::2]):
            onset, offset = on * hop_s, off * hop_s
            if duration_s is not None:
                offset = min(offset, duration_s)
            if min_duration and offset - onset < min_duration - 1e-9:
                continue
            events.append((_round(onset, 4), _round(offset, 4), label))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return events


#: Formats :meth:`Prediction.save_events` writes (``predict --event-format``).
EVENT_FORMATS = ("dcase", "raven", "audacity")


def tsv_cell(text: str) -> str:
    """``text`` as one cell of a tab-separated file: quoted (csv style, which csv readers and pandas undo) only when
    it holds a tab or a line break, so ordinary names stay as tools that split on tabs (Raven) read them."""
    if any(c in text for c in "\t\n\r"):
        return '"' + text.replace('"', '""') + '"'
    return text


def raven_table(rows: list[tuple[float, float, str, float]], *, files: list[tuple[str, float]] | None = None) -> str:
    """A Raven Pro selection table of ``(onset, offset, label, high_freq_hz)`` rows (tab-separated, header).

    With ``files`` (``(file name, start of the file in the table's time line)`` per row), the table covers several
    files as Raven lays a file set end to end: ``Begin Time (s)`` counts from the first file's start, and
    ``Begin File`` and ``File Offset (s)`` name each selection's file and its time in that file.
    """
    header = list(RAVEN_COLUMNS) + (["Begin File", "File Offset (s)"] if files is not None else [])
    lines = ["\t".join(header)]
    for i, (onset, offset, label, high) in enumerate(rows):
        start = files[i][1] if files is not None else 0.0
        cells = [str(i + 1), "Spectrogram 1", "1", f"{start + onset:.6f}", f"{start + offset:.6f}", "0.0",
                 f"{high:.1f}", tsv_cell(label)]
        if files is not None:
            cells += [tsv_cell(files[i][0]), f"{onset:.6f}"]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """Frame and clip embeddings of one input.

    Attributes:
        frame: ``(T, D)`` float32, one vector per ``hop_s`` (default: the two GRUs' outputs every 0.8 s, ``D = 512``).
        frame_times: ``(T,)`` centre of each frame in seconds from the start of the audio.
        clip: ``(D,)`` (``(2 D,)`` for ``"mean+max"``) pooling of the 0.8 s-step frames over time (default: their
            mean, for inputs up to 60 s exactly the network's clip embedding).
        model_id: Which weights produced them.
        layer: Which layer: ``"gru"`` (concatenated common and task-specific GRU outputs for v3), ``"conv"`` (the
            convolutional trunk averaged over frequency) or ``"scene"`` (scene code, one per 5 s crop).
        hop_s: Time between frames (0.8 s by default; 2.5 s between the scene crops of ``"scene"``).
        duration_s: Duration of the input audio in seconds.
        source: File path or ``"<array i>"``.
        sample_rate: The input's own sample rate.
        pooling: How ``clip`` was pooled: ``"mean"``, ``"max"`` or ``"mean+max"``.
        provenance: Where the model's weights come from (its config's ``provenance``).
        trained_tasks: Heads of the model marked as trained (empty: untrained or unknown weights).

    Example:
        >>> emb = model.embed("street.wav")                      # doctest: +SKIP
        >>> emb.frame.shape, emb.frame_times[:2], emb.clip.shape  # doctest: +SKIP
        ((12, 512), array([0.39, 1.19], dtype=float32), (512,))
    """

    frame: np.ndarray
    frame_times: np.ndarray
    clip: np.ndarray
    model_id: str | None = None
    layer: str = "gru"
    hop_s: float = 0.8
    duration_s: float = 0.0
    source: str | None = None
    sample_rate: int | None = None
    pooling: str = "mean"
    provenance: str | None = None
    trained_tasks: tuple[str, ...] = ()

    def __repr__(self) -> str:
        """One line: source, duration, layer, shapes and hop; never the arrays themselves.

        Example:
            >>> emb                                     # doctest: +SKIP
            Embeddings(street.wav, 10.0 s, layer=gru, frame=(12, 512) every 0.8 s, clip=(512,) mean)
        """
        untrained = "" if self.trained_tasks else ", untrained weights?"
        return (f"Embeddings({_short_source(self.source)}, {self.duration_s:.1f} s, layer={self.layer}, "
                f"frame={_shape(self.frame)} every {self.hop_s:g} s, clip={_shape(self.clip)} {self.pooling}"
                f"{untrained})")

    def to_dict(self) -> dict[str, Any]:
        """Arrays and metadata as a dict (the ``.npz`` keys)."""
        return {
            "frame": self.frame, "frame_times": self.frame_times, "clip": self.clip, "model_id": self.model_id,
            "layer": self.layer, "hop_s": self.hop_s, "duration_s": self.duration_s, "source": self.source,
            "sample_rate": self.sample_rate, "pooling": self.pooling, "provenance": self.provenance,
            "trained_tasks": list(self.trained_tasks),
        }

    def save(self, path: str | Path, *, level: str = "both", meta: dict[str, Any] | None = None) -> Path:
        """Write an ``.npz`` atomically (keys in docs/outputs.md).

        Args:
            path: Output file (``.npz``).
            level: ``"frame"`` (frame + frame_times), ``"clip"`` (clip) or ``"both"``.
            meta: Extra metadata stored (as JSON) under the ``meta`` key.
        """
        if level not in ("frame", "clip", "both"):
            raise ValueError(f"level must be 'frame', 'clip' or 'both', got {level!r}")
        arrays: dict[str, np.ndarray] = {}
        if level in ("frame", "both"):
            arrays["frame"] = np.asarray(self.frame, dtype=np.float32)
            arrays["frame_times"] = np.asarray(self.frame_times, dtype=np.float32)
        if level in ("clip", "both"):
            arrays["clip"] = np.asarray(self.clip, dtype=np.float32)
        info = {
            "format_version": FORMAT_VERSION, "model_id": self.model_id, "layer": self.layer, "hop_s": self.hop_s,
            "duration_s": self.duration_s, "source": self.source, "sample_rate": self.sample_rate, "level": level,
            "pooling": self.pooling, "frame_size": int(np.shape(self.frame)[1]) if np.ndim(self.frame) == 2 else 0,
            "clip_size": int(np.shape(self.clip)[0]) if np.ndim(self.clip) == 1 else 0,
            "provenance": self.provenance, "trained_tasks": list(self.trained_tasks),
        }
        info.update(meta or {})
        for key, arr in arrays.items():
            if not np.isfinite(arr).all():
                raise ValueError(f"{key} holds NaN or infinity; refusing to write {path}")
        arrays["meta"] = np.array(json.dumps(info, sort_keys=True, allow_nan=False))
        return _write_npz(Path(path), arrays)

    @classmethod
    def load(cls, path: str | Path) -> Embeddings:
        """Read an ``.npz`` written by :meth:`save` (missing levels come back as empty arrays)."""
        with np.load(Path(path), allow_pickle=False) as z:
            info = json.loads(str(z["meta"]))
            frame = z["frame"] if "frame" in z else np.zeros((0, 0), np.float32)
            times = z["frame_times"] if "frame_times" in z else np.zeros(0, np.float32)
            clip = z["clip"] if "clip" in z else np.zeros(0, np.float32)
        return cls(frame=frame, frame_times=times, clip=clip, model_id=info.get("model_id"),
                   layer=info.get("layer", "gru"), hop_s=info.get("hop_s", 0.8),
                   duration_s=info.get("duration_s", 0.0), source=info.get("source"),
                   sample_rate=info.get("sample_rate"), pooling=info.get("pooling", "mean"),
                   provenance=info.get("provenance"), trained_tasks=tuple(info.get("trained_tasks") or ()))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, writer)
    return path


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``meta`` dict of an output file (``.npz`` or ``.json``), or ``None`` if missing, damaged or unreadable."""
    import zipfile
    import zlib

    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
        else:
            meta = json.loads(path.read_text(encoding="utf-8")).get("meta")
    # what a cut or overwritten file raises on the way (a cut .npz: EOFError or BadZipFile)
    except (OSError, ValueError, KeyError, AttributeError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    return meta if isinstance(meta, dict) else None


# ----------------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """Scene, tag and event predictions of one input, with label names.

    Attributes:
        scene_probs: ``(10,)`` mean over the 5 s crops of the softmax scene probabilities (fewer with
            ``labels`` / ``exclude_labels``: the kept classes', not renormalised).
        tag_probs: ``(80,)`` sigmoid tag probabilities (60 s windows; duration-weighted mean for longer audio).
        event_probs: ``(T, 14)`` event probabilities on the 100 ms grid.
        event_times: ``(T,)`` start of each 100 ms frame in seconds.
        events: ``[(onset_s, offset_s, label), ...]`` from ``threshold`` (+ optional filtering).
        scene_labels, tag_labels, event_labels: Names, in the order of the arrays.
        scene_window_probs: ``(W, 10)`` softmax of each 5 s crop (scene over time).
        scene_window_starts: ``(W,)`` start of each crop in seconds.
        scene_window_s: Crop length in seconds (shorter inputs: one crop of their whole length).
        tag_window_probs: ``(V, 80)`` tag probabilities of each 60 s window (one row for inputs up to 60 s).
        tag_window_starts: ``(V,)`` start of each 60 s window in seconds.
        threshold, median_filter, min_duration: Settings used for ``events``.
        class_thresholds: ``{class: threshold}`` of kept tag and event classes given their own threshold (over
            ``threshold`` for ``events``; for tags, what ``score`` decides their F1 at).
        keep_labels, exclude_labels: The ``labels`` / ``exclude_labels`` options the prediction was made with
            (``None``: every class kept); the arrays and label lists hold the kept classes only.
        event_hop_s: 0.1.
        duration_s: Duration of the input in seconds.
        model_id: Which weights produced it.
        untrained_tasks: Heads of this model that were never trained (their outputs are meaningless).
        source: File path or ``"<array i>"``.
        sample_rate: The input's own sample rate.
        heads: What each head's outputs are (``{"scene": "fine-tuned for classification (your labels)", "tags":
            "base model dcasenet-v3", ...}``); see :func:`dcasenet_hub.inference.settings.head_roles`.
        finetuned_task: ``"classification"``, ``"tagging"`` or ``"detection"`` for a model fine-tuned by
            dcasenet-hub (its outputs are also under that name in :meth:`to_dict`), else ``None``.

    Example:
        >>> pred = model.predict("street.wav")          # doctest: +SKIP
        >>> pred.top_scene, pred.top_tags(3), pred.events[:1]  # doctest: +SKIP
        ('street_traffic', [('Traffic_noise_and_roadway_noise', 0.81), ...], [(0.0, 4.3, 'engine')])
    """

    scene_probs: np.ndarray
    tag_probs: np.ndarray
    event_probs: np.ndarray
    event_times: np.ndarray
    events: list[tuple[float, float, str]]
    scene_labels: tuple[str, ...]
    tag_labels: tuple[str, ...]
    event_labels: tuple[str, ...]
    scene_window_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    scene_window_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scene_window_s: float = 5.0
    tag_window_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    tag_window_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    threshold: float = 0.3
    median_filter: float | None = None
    min_duration: float | None = None
    event_hop_s: float = 0.1
    duration_s: float = 0.0
    model_id: str | None = None
    untrained_tasks: tuple[str, ...] = ()
    source: str | None = None
    sample_rate: int | None = None
    heads: dict[str, str] = field(default_factory=dict)
    finetuned_task: str | None = None
    class_thresholds: dict[str, float] = field(default_factory=dict)
    keep_labels: tuple[str, ...] | None = None
    exclude_labels: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        """One line: source, duration, top scene, top 3 tags and the number of events; never the arrays.

        Example:
            >>> pred                                    # doctest: +SKIP
            Prediction(street.wav, 10.0 s, scene=street_traffic 0.91, tags=[Traffic_noise 0.80, Car 0.55, Speech 0.30], 3 events)
        """
        parts = [_short_source(self.source), f"{self.duration_s:.1f} s"]
        if np.size(self.scene_probs) and len(self.scene_labels):
            name = "classification" if self.finetuned_task == "classification" else "scene"
            parts.append(f"{name}={self.top_scene} {float(np.max(self.scene_probs)):.2f}")
        if np.size(self.tag_probs) and len(self.tag_labels):
            parts.append("tags=[" + ", ".join(f"{t} {p:.2f}" for t, p in self.top_tags(3)) + "]")
        parts.append(f"{len(self.events)} event{'' if len(self.events) == 1 else 's'}")
        if self.untrained_tasks:
            parts.append(f"untrained: {', '.join(self.untrained_tasks)}")
        return f"Prediction({', '.join(parts)})"

    @property
    def top_scene(self) -> str:
        """Name of the most probable scene."""
        return self.scene_labels[int(np.argmax(self.scene_probs))]

    @property
    def scenes(self) -> dict[str, float]:
        """``{scene: probability}`` in label order."""
        return {k: float(v) for k, v in zip(self.scene_labels, self.scene_probs)}

    @property
    def tags(self) -> dict[str, float]:
        """``{tag: probability}`` in label order."""
        return {k: float(v) for k, v in zip(self.tag_labels, self.tag_probs)}

    def top_tags(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable tags, best first (all of them when ``k`` is larger than their number)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"top_tags(k={k!r}): k must be a whole number >= 0")
        order = np.argsort(-np.asarray(self.tag_probs), kind="stable")[:k]
        return [(self.tag_labels[i], float(self.tag_probs[i])) for i in order]

    def detect(self, *, threshold: float | None = None, class_thresholds: Mapping[str, float] | None = None,
               median_filter: float | None = None,
               min_duration: float | None = None) -> list[tuple[float, float, str]]:
        """Event list with other settings (see :func:`detect_events`); ``self.events`` is left unchanged.

        A setting left out is the prediction's own, so ``detect()`` gives ``self.events``. ``threshold`` replaces
        the every-class threshold; the per-class ones (``self.class_thresholds``) still apply over it unless
        ``class_thresholds`` replaces them (``{}``: none); ``median_filter=0`` and ``min_duration=0`` turn those off.

        Raises:
            OptionsError: a value ``predict`` would refuse, or a class name that is no tag or event class here.

        Example:
            >>> pred.detect(threshold=0.5, class_thresholds={"dog": 0.7})   # doctest: +SKIP
            [(1.2, 2.0, 'dog')]
        """
        from dcasenet_hub.inference.options import InferenceOptions, options_error

        given = {"threshold": threshold, "class_thresholds": class_thresholds, "median_filter": median_filter,
                 "min_duration": min_duration}
        checked = InferenceOptions(**{k: v for k, v in given.items() if v is not None})  # the checks predict makes
        known = (*self.event_labels, *self.tag_labels)
        for name, p in (checked.class_thresholds or {}).items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "the event classes are " + ", ".join(
                    self.event_labels)
                raise options_error("class_thresholds", {name: p}, f"{name!r} is not a tag or event class of this "
                                    f"prediction ({hint})")
        return detect_events(self.event_probs, self.event_labels, hop_s=self.event_hop_s,
                             threshold=self.threshold if threshold is None else checked.threshold,
                             class_thresholds=self.class_thresholds if class_thresholds is None
                             else dict(checked.class_thresholds or {}),
                             median_filter=self.median_filter if median_filter is None else checked.median_filter,
                             min_duration=self.min_duration if min_duration is None else checked.min_duration,
                             duration_s=self.duration_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the per-file ``.json`` without the ``meta`` key)."""
        d = {
            "source": self.source,
            "duration_s": _round(self.duration_s),
            "sample_rate": self.sample_rate,
            "model_id": self.model_id,
            "untrained_tasks": list(self.untrained_tasks),
            "heads": dict(self.heads),
            "scene": {
                "top": self.top_scene,
                "probs": {k: _round(v) for k, v in self.scenes.items()},
                "window_s": self.scene_window_s,
                "windows": [
                    {"start": _round(s, 4), "probs": [_round(p) for p in row]}
                    for s, row in zip(self.scene_window_starts, self.scene_window_probs)
                ],
            },
            "label_filter": {"labels": _names(self.keep_labels), "exclude_labels": _names(self.exclude_labels)},
            "tags": {
                "class_thresholds": {k: v for k, v in self.class_thresholds.items() if k in self.tag_labels},
                "top": [[k, _round(v)] for k, v in self.top_tags(5)],
                "probs": {k: _round(v) for k, v in self.tags.items()},
                "windows": [
                    {"start": _round(s, 4), "probs": [_round(p) for p in row]}
                    for s, row in zip(self.tag_window_starts, self.tag_window_probs)
                ],
            },
            "events": {
                "threshold": self.threshold,
                "class_thresholds": {k: v for k, v in self.class_thresholds.items() if k in self.event_labels},
                "median_filter": self.median_filter,
                "min_duration": self.min_duration,
                "hop_s": self.event_hop_s,
                "labels": list(self.event_labels),
                "list": [{"onset": on, "offset": off, "event_label": lab} for on, off, lab in self.events],
            },
        }
        if self.finetuned_task:  # the fine-tuned head's outputs also under the name of what it was tuned for
            head = {"classification": "scene", "tagging": "tags", "detection": "events"}[self.finetuned_task]
            d[self.finetuned_task] = d[head]
        return d

    def save(self, path: str | Path, *, meta: dict[str, Any] | None = None) -> Path:
        """Write the ``.json`` atomically (frame probabilities go to :meth:`save_scores`)."""
        d = self.to_dict()
        d["meta"] = {"format_version": FORMAT_VERSION, "duration_s": d["duration_s"], **(meta or {})}
        path = Path(path)
        atomic_write_text(path, json.dumps(d, indent=1, allow_nan=False) + "\n")  # ValueError on NaN/inf
        return path

    def save_events(self, path: str | Path, *, filename: str | None = None, format: str = "dcase") -> Path:
        """Write the event list for a scoring tool or an annotation tool (atomically).

        Args:
            path: Output file.
            filename: The input's name in the ``dcase`` rows (default: the source's file name).
            format: ``"dcase"``: CSV ``filename,onset,offset,event_label`` with a header; ``"raven"``: a Raven
                selection table (tab-separated, :data:`~dcasenet_hub.metrics.annotations.RAVEN_COLUMNS`, one
                spectrogram-view row per event, the label under ``Annotation``, 0 Hz to the input's Nyquist
                frequency); ``"audacity"``: an Audacity label track (``start<TAB>end<TAB>label``, no header).
                :func:`dcasenet_hub.metrics.read_annotations` reads all three back to the same events.
        """
        if format not in EVENT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(EVENT_FORMATS)}; got {format!r}")
        name = filename if filename is not None else Path(self.source or "").name
        buf = io.StringIO()
        if format == "dcase":
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(DCASE_COLUMNS)
            w.writerows([name, f"{on:.3f}", f"{off:.3f}", lab] for on, off, lab in self.events)
        elif format == "raven":
            buf.write(raven_table([(on, off, lab, self.nyquist_hz) for on, off, lab in self.events]))
        else:
            buf.writelines(f"{on:.6f}\t{off:.6f}\t{lab}\n" for on, off, lab in self.events)
        atomic_write_text(Path(path), buf.getvalue())
        return Path(path)

    @property
    def nyquist_hz(self) -> float:
        """Half the input's own sample rate (24 kHz, the network's, when unknown): the top of a Raven selection."""
        return (self.sample_rate or 24000) / 2

    def save_scores(self, path: str | Path) -> Path:
        """Write frame probabilities as a sed_scores_eval TSV: ``onset<TAB>offset<TAB><one column per class>``."""
        hop = self.event_hop_s
        if not np.isfinite(np.asarray(self.event_probs, dtype=np.float64)).all():
            raise ValueError(f"event probabilities hold NaN or infinity; refusing to write {path}")
        lines = ["\t".join(["onset", "offset", *self.event_labels])]
        for t, row in zip(self.event_times, self.event_probs):
            onset = float(t)
            offset = min(onset + hop, self.duration_s) if self.duration_s else onset + hop
            lines.append("\t".join([f"{onset:.3f}", f"{offset:.3f}", *(f"{float(p):.6f}" for p in row)]))
        atomic_write_text(Path(path), "\n".join(lines) + "\n")
        return Path(path)

