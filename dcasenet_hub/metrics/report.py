"""Score predictions against a user's annotations: :func:`score` and its :class:`ScoreReport`.

The predictions are a ``predict`` output folder (its ``.json`` and ``.scores.tsv`` files, docs/outputs.md) or
:class:`~dcasenet_hub.Prediction` objects; the annotations any format :func:`~.annotations.read_annotations` reads.
Each number comes from this package's metrics, which equal the reference libraries' (sed_eval for the segment- and
event-based scores, scikit-learn for AP, F1 and the confusion matrix; PSDS is sed_scores_eval itself).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub._io import atomic_write_text, json_ready
from dcasenet_hub._options import options_error
from dcasenet_hub.errors import (
    AnnotationError,
    SedScoresEvalUnavailableError,
    UnknownLabelError,
)
from dcasenet_hub.metrics.annotations import Annotations, file_key, read_annotations
from dcasenet_hub.metrics.events import event_based_metrics, segment_based_metrics
from dcasenet_hub.metrics.psds import merge_overlaps, psds_scores
from dcasenet_hub.metrics.scenes import confusion_matrix, macro_f1
from dcasenet_hub.metrics.tagging import (
    average_precision,
    f1_at_threshold,
    lwlrap,
    precision_recall_curve,
)

TASKS = ("scenes", "tags", "events")


@dataclass
class _Predicted:
    """What scoring needs of one file's prediction."""

    key: str
    name: str
    duration: float
    scene_labels: list[str]
    scene_probs: np.ndarray
    tag_labels: list[str]
    tag_probs: np.ndarray
    event_labels: list[str]
    events: list[tuple[float, float, str]]
    threshold: float | None
    timestamps: np.ndarray | None = None  # (T + 1,) frame boundaries of event_probs
    event_probs: np.ndarray | None = None  # (T, C)
    #: per-class thresholds of tag classes (``predict --threshold LABEL=P``)
    tag_thresholds: dict[str, float] = field(default_factory=dict)
    #: predict kept only some classes (``labels`` / ``exclude_labels``)
    filtered: bool = False


def read_scores_tsv(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(timestamps (T + 1,), probs (T, C), labels)`` of a ``.scores.tsv`` file (sed_scores_eval's layout)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if header[:2] != ["onset", "offset"]:
        raise AnnotationError(f"{path}: not a scores file (the header must start with onset, offset)")
    rows = np.array([[float(x) for x in ln.split("\t")] for ln in lines[1:] if ln.strip()],
                    dtype=np.float64).reshape(-1, len(header))
    timestamps = np.r_[rows[:, 0], rows[-1:, 1]] if len(rows) else np.zeros(1)
    return timestamps, rows[:, 2:], header[2:]


def _from_json(path: Path, key: str) -> _Predicted:
    d = json.loads(path.read_text(encoding="utf-8"))
    ev = d["events"]
    scores = path.with_name(path.name[: -len(".json")] + ".scores.tsv")
    timestamps = probs = None
    if scores.is_file():
        timestamps, probs, labels = read_scores_tsv(scores)
        if labels != list(ev["labels"]):
            raise AnnotationError(f"{scores}: its classes differ from {path.name}'s; rerun predict with --overwrite")
    return _Predicted(
        key=key, name=str(d.get("source") or key), duration=float(d["duration_s"]),
        scene_labels=list(d["scene"]["probs"]), scene_probs=np.array(list(d["scene"]["probs"].values()), float),
        tag_labels=list(d["tags"]["probs"]), tag_probs=np.array(list(d["tags"]["probs"].values()), float),
        event_labels=list(ev["labels"]),
        events=[(float(e["onset"]), float(e["offset"]), str(e["event_label"])) for e in ev["list"]],
        threshold=ev.get("threshold"), timestamps=timestamps, event_probs=probs,
        tag_thresholds={str(k): float(v) for k, v in (d["tags"].get("class_thresholds") or {}).items()},
        filtered=any(v is not None for v in (d.get("label_filter") or {}).values()))


def _read_folder(folder: Path) -> list[_Predicted]:
    out = []
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not (isinstance(d, dict) and {"scene", "tags", "events", "duration_s"} <= set(d)):
            continue  # not a prediction (e.g. a report.json written here)
        out.append(_from_json(path, file_key(rel.as_posix())))
    if not out:
        raise AnnotationError(f"{folder}: no predictions (.json files written by `dcasenet-hub predict`) in this "
                              "folder; run predict first or give its output folder")
    return out


def _from_object(p: Any) -> _Predicted:
    source = str(getattr(p, "source", None) or "")
    hop = float(getattr(p, "event_hop_s", 0.1))
    times = np.asarray(p.event_times, dtype=np.float64)
    duration = float(getattr(p, "duration_s", 0.0))
    offsets = np.minimum(times + hop, duration) if duration else times + hop
    return _Predicted(
        key=file_key(source), name=source, duration=duration,
        scene_labels=list(p.scene_labels), scene_probs=np.asarray(p.scene_probs, dtype=np.float64),
        tag_labels=list(p.tag_labels), tag_probs=np.asarray(p.tag_probs, dtype=np.float64),
        event_labels=list(p.event_labels), events=[(float(a), float(b), str(c)) for a, b, c in p.events],
        threshold=getattr(p, "threshold", None),
        timestamps=np.r_[times, offsets[-1:]] if times.size else None,
        event_probs=np.asarray(p.event_probs, dtype=np.float64) if times.size else None,
        tag_thresholds={k: float(v) for k, v in (getattr(p, "class_thresholds", None) or {}).items()
                        if k in p.tag_labels},
        filtered=getattr(p, "keep_labels", None) is not None or getattr(p, "exclude_labels", None) is not None)


def _match(pred_keys: Sequence[str], truth_keys: Sequence[str]) -> dict[str, str]:
    """``{truth key: prediction key}``: equal keys first, then a unique key that ends with the other as a path."""
    free = set(pred_keys)
    out = {}
    for t in truth_keys:
        if t in free:
            out[t] = t
            free.discard(t)
    for t in truth_keys:
        if t in out:
            continue
        hits = [p for p in free if p.endswith("/" + t) or t.endswith("/" + p)]
        if len(hits) == 1:
            out[t] = hits[0]
            free.discard(hits[0])
    return out


@dataclass
class ScoreReport:
    """The result of :func:`score`.

    Attributes:
        task: ``"scenes"``, ``"tags"`` or ``"events"``.
        metrics: The numbers (the ``metrics`` of ``report.json``; keys in docs/evaluation.md).
        files: ``{"scored": n, "no_prediction": [...], "no_annotation": [...]}``: annotated files without a
            prediction and predicted files without an annotation (listed, not scored); ``"scene_not_predicted"``:
            files whose annotated scene the predictions do not hold (predict's ``labels`` / ``exclude_labels``).
        labels: The labels evaluated, in the model's order.
        label_map: The mapping applied to the annotations' labels.
        curves: Arrays for plots (not in the JSON): scenes ``confusion`` (+ ``confusion_labels``); tags
            ``pr`` ``{label: (precision, recall)}``; events ``psd_roc`` ``{scenario: {label: (tpr, efpr)}}``.
        predictions, truth: What was compared.
    """

    task: str
    metrics: dict[str, Any]
    files: dict[str, Any]
    labels: list[str]
    label_map: dict[str, str | None] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict, repr=False)
    predictions: str = ""
    truth: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (NaN -> ``null``)."""
        return json_ready({"task": self.task, "predictions": self.predictions, "truth": self.truth,
                        "labels": self.labels, "label_map": self.label_map, "files": self.files,
                        "metrics": self.metrics})

    def save(self, path: str | Path) -> Path:
        """Write ``report.json`` atomically (standard JSON)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    def __repr__(self) -> str:
        """One line: the task, what was scored and the headline numbers (:meth:`table` has the rest)."""
        title, headline = self.table().splitlines()[:2]
        return f"ScoreReport({title};{' '.join(headline.split())})"

    def table(self) -> str:
        """A short text summary: the headline numbers, then per-class values, then the files left out."""
        m = self.metrics

        def num(v: Any) -> str:
            return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

        lines = [f"{self.task}: {self.files['scored']} file(s) scored, {len(self.labels)} label(s)"]
        if self.task == "scenes":
            lines.append(f"  accuracy {num(m['accuracy'])}   macro F1 {num(m['macro_f1'])}")
            per_class = [("recall", m["recall"])]
        elif self.task == "tags":
            own = (f" ({len(m['class_thresholds'])} label(s) at their own)" if m.get("class_thresholds") else "")
            lines.append(f"  mAP {num(m['map'])}   lwlrap {num(m['lwlrap'])}   F1 at {m['threshold']:g}{own}: "
                         f"micro {num(m['f1_micro'])}, macro {num(m['f1_macro'])}")
            per_class = [("AP", m["ap"]), ("F1", m["f1"])]
        else:
            seg, ev = m["segment_based"], m["event_based"]
            lines.append(f"  segment-based ({seg['segment_length']:g} s): F1 {num(seg['f1'])}   ER {num(seg['er'])}")
            lines.append(f"  event-based (collar {ev['t_collar']:g} s): F1 {num(ev['f1'])} micro, "
                         f"{num(ev['macro_f1'])} macro")
            ps = m.get("psds")
            if isinstance(ps, dict) and "error" in ps:
                lines.append(f"  PSDS: {ps['error']}")
            elif isinstance(ps, dict):
                lines.append("  " + "   ".join(f"PSDS {name[-1]} {num(v['value'])}" for name, v in ps.items()))
            per_class = [("seg F1", seg["class_f1"]), ("event F1", ev["class_f1"])]
        width = max([len(label) for label in self.labels] + [5])
        lines.append("  " + "label".ljust(width) + "".join(f"  {name:>8}" for name, _ in per_class))
        for label in self.labels:
            lines.append("  " + label.ljust(width) + "".join(f"  {num(values.get(label)):>8}"
                                                             for _, values in per_class))
        absent = m.get("not_predicted_labels") or []
        if absent:
            lines.append(f"  labels not scored (annotated, not in the predictions: predict kept only some classes): "
                         f"{', '.join(absent)}")
        for what, names in (("annotated, no prediction", self.files["no_prediction"]),
                            ("predicted, not annotated", self.files["no_annotation"]),
                            ("annotated scene not in the predictions", self.files.get("scene_not_predicted", []))):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                lines.append(f"  not scored ({what}): {shown}")
        return "\n".join(lines)


def _map_labels(ann: Annotations, label_map: Mapping[str, str | None]) -> Annotations:
    def mapped(label: str) -> str | None:
        return label_map.get(label, label)

    if ann.kind == "events":
        events = {k: [(a, b, mapped(c)) for a, b, c in evs] for k, evs in ann.events.items()}
        return Annotations(kind=ann.kind, events={k: [e for e in evs if e[2]] for k, evs in events.items()},
                           names=ann.names, format=ann.format, source=ann.source)
    labels = {k: [m for m in (mapped(x) for x in v) if m] for k, v in ann.labels.items()}
    return Annotations(kind=ann.kind, labels={k: list(dict.fromkeys(v)) for k, v in labels.items()},
                       names=ann.names, format=ann.format, source=ann.source)


def _choose_task(ann: Annotations, task: str | None, first: _Predicted) -> str:
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
        if (task == "events") != (ann.kind == "events"):
            raise AnnotationError(f"{ann.source}: holds {ann.kind}, which cannot score {task}; "
                                  "events need onset and offset times, scenes and tags need labels per file")
        return task
    if ann.kind == "events":
        return "events"
    used = set(ann.label_set())
    one_each = all(len(v) == 1 for v in ann.labels.values())
    if one_each and (used & set(first.scene_labels)) and not (used & set(first.tag_labels)):
        return "scenes"
    return "tags"


def _check_labels(ann: Annotations, known: Sequence[str], task: str) -> None:
    unknown = set(ann.label_set()) - set(known)
    if unknown:
        raise UnknownLabelError(ann.source, sorted(unknown), known, task)


def _scenes(pairs: list[tuple[str, _Predicted]], ann: Annotations) -> tuple[dict[str, Any], list[str], dict]:
    labels = pairs[0][1].scene_labels
    bad = [ann.names.get(k, k) for k, _ in pairs if len(ann.labels[k]) != 1]
    if bad:
        raise AnnotationError(f"{ann.source}: scenes need exactly one label per file; these have none or several: "
                              f"{', '.join(bad[:20])}" + (" ..." if len(bad) > 20 else ""))
    index = {label: i for i, label in enumerate(labels)}
    true = np.array([index[ann.labels[k][0]] for k, _ in pairs])
    pred = np.array([int(np.argmax(p.scene_probs)) for _, p in pairs])
    present = sorted(set(true.tolist()) | set(pred.tolist()))
    cm = confusion_matrix(pred, true, n_classes=len(labels))[np.ix_(present, present)]
    annotated = sorted(set(true.tolist()))
    recall = {labels[c]: float(np.mean(pred[true == c] == c)) for c in annotated}
    metrics = {"accuracy": float(np.mean(pred == true)), "macro_f1": macro_f1(pred, true), "recall": recall,
               "confusion": {"labels": [labels[c] for c in present], "matrix": cm.tolist()}}
    return metrics, [labels[c] for c in annotated], {"confusion": cm, "confusion_labels": [labels[c] for c in present]}


def _tags(pairs: list[tuple[str, _Predicted]], ann: Annotations, labels: Sequence[str] | None,
          threshold: float | None) -> tuple[dict[str, Any], list[str], dict]:
    model = pairs[0][1].tag_labels
    used = set(ann.label_set())
    chosen = [x for x in model if x in (set(labels) if labels is not None else used)]
    cols = [model.index(x) for x in chosen]
    truth = np.array([[x in ann.labels[k] for x in chosen] for k, _ in pairs], dtype=np.int64)
    probs = np.stack([p.tag_probs[cols] for _, p in pairs])
    thr = _threshold(pairs, threshold)
    own = {} if threshold is not None else _class_thresholds(pairs, chosen)
    ap = average_precision(truth, probs)
    micro, macro, per_class = f1_at_threshold(truth, probs, np.array([own.get(x, thr) for x in chosen], float))
    defined = ap[~np.isnan(ap)]
    metrics = {"map": float(defined.mean()) if defined.size else float("nan"), "lwlrap": lwlrap(truth, probs),
               "ap": dict(zip(chosen, ap.tolist())), "threshold": thr, "class_thresholds": own,
               "f1_micro": micro, "f1_macro": macro,
               "f1": dict(zip(chosen, per_class.tolist())),
               "positives": dict(zip(chosen, truth.sum(axis=0).tolist()))}
    pr = {x: precision_recall_curve(truth[:, i], probs[:, i])[:2] for i, x in enumerate(chosen) if truth[:, i].any()}
    return metrics, chosen, {"pr": pr}


def _threshold(pairs: list[tuple[str, _Predicted]], threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    used = {p.threshold for _, p in pairs if p.threshold is not None}
    if len(used) > 1:
        raise ValueError(f"the predictions were made with different thresholds ({sorted(used)}); pass threshold= "
                         "(--threshold) to score them at one")
    return float(used.pop()) if used else 0.3


def _class_thresholds(pairs: list[tuple[str, _Predicted]], chosen: Sequence[str]) -> dict[str, float]:
    """The per-class thresholds the predictions were made with (``predict --threshold LABEL=P``), of ``chosen``."""
    out = {}
    for label in chosen:
        used = {p.tag_thresholds.get(label) for _, p in pairs}
        if len(used) > 1:
            shown = sorted(used, key=lambda v: -1.0 if v is None else v)
            raise ValueError(f"the predictions were made with different thresholds for {label} ({shown}; None: "
                             "the all-class one); pass threshold= (--threshold) to score them at one")
        value = used.pop()
        if value is not None:
            out[label] = value
    return out


def _events(pairs: list[tuple[str, _Predicted]], ann: Annotations, labels: Sequence[str] | None, *,
            segment_length: float, t_collar: float, percentage_of_length: float,
            with_psds: bool) -> tuple[dict[str, Any], list[str], dict]:
    annotated: dict[str, list[tuple[float, float, str]]] = {}
    for k, p in pairs:  # 1 s of slack for rounding; more is another file's annotation, or times not in seconds
        late = [e for e in ann.events[k] if e[1] > p.duration + 1.0]
        if late:
            onset, offset, label = late[0]
            raise AnnotationError(f"{ann.source}: {ann.names.get(k, k)}: event {label!r} {onset:g}-{offset:g} s ends "
                                  f"after the file ({p.duration:.3f} s); give times in seconds, of this recording")
        # within the slack: clipped to the file, as its predictions are (an event after its end cannot be detected)
        annotated[k] = [(a, min(b, p.duration), c) for a, b, c in ann.events[k] if a < p.duration]
    model = pairs[0][1].event_labels
    used = set(ann.label_set())
    chosen = [x for x in model if x in (set(labels) if labels is not None else used)]
    ref = [(k, a, b, c) for k, _ in pairs for a, b, c in annotated[k] if c in chosen]
    est = [(k, a, b, c) for k, p in pairs for a, b, c in p.events if c in chosen]
    ignored = sorted({c for _, p in pairs for _, _, c in p.events} - set(chosen))
    durations = {k: p.duration for k, p in pairs}
    seg = segment_based_metrics(ref, est, time_resolution=segment_length, evaluated_length=durations, labels=chosen)
    ev = event_based_metrics(ref, est, t_collar=t_collar, percentage_of_length=percentage_of_length, labels=chosen)
    metrics: dict[str, Any] = {
        "segment_based": {"segment_length": segment_length, "f1": seg.f1, "er": seg.er, "precision": seg.precision,
                          "recall": seg.recall, "class_f1": seg.class_f1},
        "event_based": {"t_collar": t_collar, "percentage_of_length": percentage_of_length, "f1": ev.f1,
                        "precision": ev.precision, "recall": ev.recall, "macro_f1": ev.macro_f1,
                        "class_f1": ev.class_f1},
        "ignored_predicted_labels": ignored,
        "reference_events": {x: sum(1 for e in ref if e[3] == x) for x in chosen},
    }
    curves: dict[str, Any] = {}
    if with_psds:
        no_scores = [p.name for _, p in pairs if p.event_probs is None]
        unannotated = [x for x in chosen if not metrics["reference_events"][x]]
        if not chosen:
            metrics["psds"] = {"error": "no event class to score (the annotations hold no event); name the classes "
                                        "with labels= (--labels)"}
        elif unannotated:  # sed_scores_eval needs a reference event of every class it scores
            metrics["psds"] = {"error": f"no annotated event of {', '.join(unannotated)}: PSDS needs at least one of "
                                        "each scored class; leave those out of labels= (--labels)"}
        elif no_scores:
            metrics["psds"] = {"error": f"no frame scores (.scores.tsv) for {len(no_scores)} file(s), e.g. "
                                        f"{no_scores[0]}; rerun predict to write them"}
        else:
            cols = [model.index(x) for x in chosen]
            try:
                result = psds_scores({k: (p.timestamps, p.event_probs[:, cols]) for k, p in pairs},
                              {k: [e for e in annotated[k] if e[2] in chosen] for k, _ in pairs},
                              durations, labels=chosen)
            except SedScoresEvalUnavailableError as exc:
                metrics["psds"] = {"error": str(exc)}
            else:
                metrics["psds"] = {name: {"value": r.value, "class_values": r.class_values, "params": r.params}
                                   for name, r in result.items()}
                curves["psd_roc"] = {name: {x: (roc[0], roc[1]) for x, roc in r.class_rocs.items()}
                                     for name, r in result.items()}
                curves["psd_roc_system"] = {name: r.roc for name, r in result.items()}
                merged = sum(len(evs) - len(merge_overlaps(evs)) for evs in annotated.values())
                if merged:
                    metrics["psds_merged_overlaps"] = merged
    return metrics, chosen, curves


def score(
    predictions: str | Path | Sequence[Any],
    truth: str | Path | Annotations,
    *,
    task: str | None = None,
    label_map: Mapping[str, str | None] | None = None,
    labels: Sequence[str] | None = None,
    threshold: float | None = None,
    annotation_format: str = "auto",
    segment_length: float = 1.0,
    t_collar: float = 0.2,
    percentage_of_length: float = 0.2,
    psds: bool = True,
) -> ScoreReport:
    """Compare predictions with annotations and compute the task's scores.

    * Scenes: accuracy, macro F1, recall per annotated class, confusion matrix (annotated and predicted classes).
    * Tags: mAP and lwlrap over the evaluated labels, AP per label, F1 (micro, macro, per label) at the threshold
      of the predictions (``threshold`` overrides it).
    * Events: segment-based F1 and error rate (``segment_length`` s segments over each file's duration),
      event-based F1 (``t_collar`` onset collar, offset ``max(t_collar, percentage_of_length * length)``; DCASE's
      200 ms and 0.2), and PSDS of the two DCASE 2021 scenarios from the frame scores (needs sed_scores_eval: the
      ``score`` extra; without it the report says so and gives the other numbers).

    Files are matched by name without extension (``a.wav`` in the annotations is ``a.json`` in the folder; a path
    matches a unique prediction whose path ends with it). Files on one side only are listed in ``files``, never
    scored silently as empty.

    Args:
        predictions: A ``predict`` output folder, or a list of :class:`~dcasenet_hub.Prediction`.
        truth: An annotation file or folder (any format of :func:`~.annotations.read_annotations`), or
            :class:`~.annotations.Annotations`.
        task: ``"scenes"``, ``"tags"`` or ``"events"``; default: events for event annotations, scenes for one
            scene label per file, else tags.
        label_map: ``{annotation label: model label}``; ``None`` as the value leaves that label out.
        labels: The model labels to evaluate (tags, events); default: those the annotations use. Predictions of
            other labels are ignored (listed under ``ignored_predicted_labels`` for events). Predictions made with
            ``labels`` / ``exclude_labels`` hold only the kept classes: annotated labels they do not hold are left
            out of the scores and listed under ``metrics["not_predicted_labels"]`` (scenes: files of such a scene
            under ``files["scene_not_predicted"]``).
        threshold: Tags' decision threshold of every class (default: the one the predictions were made with, and
            each class's own where the predictions record one: ``metrics["class_thresholds"]``).
        annotation_format: Format of ``truth`` (``"auto"``, ``"dcase"``, ``"raven"``, ``"audacity"``, ``"labels"``).
        segment_length, t_collar, percentage_of_length: The event metrics' parameters.
        psds: Compute PSDS (events).

    Raises:
        UnknownLabelError: annotation labels the model does not know (the message lists the model's labels and
            how to map them).
        AnnotationError: unreadable annotations, no file in common, or an event that ends after its file.
        OptionsError: a value out of range (``threshold``, ``segment_length``, ``t_collar``,
            ``percentage_of_length``).

    Example:
        >>> report = score("predictions/", "truth.tsv")     # doctest: +SKIP
        >>> print(report.table()); report.save("report.json")   # doctest: +SKIP
    """
    for name, value, ok, allowed in (
            ("threshold", threshold, lambda v: v is None or 0 <= v <= 1, "must be a probability between 0 and 1"),
            ("segment_length", segment_length, lambda v: v >= 0.1, "must be a number of seconds >= 0.1 (the "
             "100 ms event grid)"),
            ("t_collar", t_collar, lambda v: v >= 0, "must be a number of seconds >= 0"),
            ("percentage_of_length", percentage_of_length, lambda v: v >= 0, "must be a fraction >= 0")):
        number = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                   and math.isfinite(value))
        if not number or not ok(value):
            raise options_error(name, value, allowed)
    if isinstance(predictions, (str, Path)):
        if not Path(predictions).is_dir():
            raise AnnotationError(f"{predictions}: not a folder; give the output folder of `dcasenet-hub predict`")
        predicted = _read_folder(Path(predictions))
        pred_source = str(predictions)
    else:
        predicted = [_from_object(p) for p in predictions]
        pred_source = f"<{len(predicted)} Prediction objects>"
        if not predicted:
            raise ValueError("predictions is an empty list")
    keys = [p.key for p in predicted]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise AnnotationError(f"several predictions are for the same file name: {', '.join(dup[:10])}; "
                              "score them separately")
    ann = truth if isinstance(truth, Annotations) else read_annotations(truth, format=annotation_format)
    ann = _map_labels(ann, dict(label_map or {}))
    chosen_task = _choose_task(ann, task, predicted[0])
    vocabulary = {"scenes": "scene_labels", "tags": "tag_labels", "events": "event_labels"}[chosen_task]
    known = getattr(predicted[0], vocabulary)
    differ = [p.name for p in predicted if getattr(p, vocabulary) != known]
    if differ:
        raise AnnotationError(f"the predictions hold different {chosen_task} classes ({predicted[0].name} and "
                              f"{differ[0]}: predict was run with other --labels / --exclude-labels); score them "
                              "separately, or rerun predict with --overwrite")
    absent: list[str] = []
    if any(p.filtered for p in predicted):
        # classes predict left out are not the annotations' fault: they are listed and left out of the scores
        absent = sorted(set(ann.label_set()) - set(known))
        ann = _map_labels(ann, dict.fromkeys(absent))
        if labels is not None and set(labels) - set(known):
            raise AnnotationError(f"labels= names {', '.join(sorted(set(labels) - set(known)))}, which the "
                                  f"predictions do not hold (predict kept only {', '.join(known)}); rerun predict "
                                  "without --labels / --exclude-labels to score them")
        if not (set(ann.label_set()) & set(known)) and labels is None:
            raise AnnotationError(f"{ann.source}: none of the annotated labels ({', '.join(absent)}) is in the "
                                  f"predictions (predict kept only {', '.join(known)}); rerun predict with those "
                                  "classes")
    _check_labels(ann, known, chosen_task)
    if labels is not None:
        _check_labels(Annotations(kind="labels", labels={"": list(labels)}, source="labels="), known, chosen_task)
    by_key = {p.key: p for p in predicted}
    matched = _match(keys, ann.files)
    if not ann.files:
        raise AnnotationError(f"{ann.source}: names no file (a header without rows?); give the annotations of the "
                              "predicted files")
    if not matched:
        raise AnnotationError(
            f"{ann.source}: no annotated file has a prediction in {pred_source}: the annotations name e.g. "
            f"{ann.files[:3]}, the predictions {keys[:3]}; names are matched without their extension (a.wav = a.json)")
    pairs = [(t, by_key[matched[t]]) for t in ann.files if t in matched]
    files: dict[str, Any] = {"no_prediction": [ann.names.get(t, t) for t in ann.files if t not in matched],
                             "no_annotation": sorted(by_key[k].name for k in set(keys) - set(matched.values()))}
    if chosen_task == "scenes" and absent:  # a file whose scene predict left out cannot be scored
        files["scene_not_predicted"] = [ann.names.get(t, t) for t, _ in pairs if not ann.labels[t]]
        pairs = [(t, p) for t, p in pairs if ann.labels[t]]
    files = {"scored": len(pairs), **files}
    if chosen_task == "scenes":
        metrics, evaluated, curves = _scenes(pairs, ann)
    elif chosen_task == "tags":
        metrics, evaluated, curves = _tags(pairs, ann, labels, threshold)
    else:
        metrics, evaluated, curves = _events(pairs, ann, labels, segment_length=float(segment_length),
                                             t_collar=float(t_collar), percentage_of_length=float(percentage_of_length),
                                             with_psds=psds)
    if absent:
        metrics["not_predicted_labels"] = absent
    return ScoreReport(task=chosen_task, metrics=metrics, files=files, labels=evaluated,
                       label_map=dict(label_map or {}), curves=curves, predictions=pred_source,
                       truth=str(ann.source))

