"""Evaluation metrics of the three DcaseNet tasks (numpy only).

* Audio tagging: :func:`lwlrap` (label-weighted label-ranking average precision, the DCASE2019 Task 2 metric) and
  :func:`mean_average_precision` (macro mAP).
* Sound event detection: :func:`sed_scores` with two protocols,

  - ``"paper"``: the authors' computation, reproduced exactly so numbers are comparable with the paper's Table 2:
    all files concatenated along time, blocks of ``block_frames`` rows (50 rows = **5 s** at the 100 ms label rate,
    not 1 s), each block's activity is the max over its first ``block_frames - 1`` rows only (the off-by-one of the
    DCASE2019 baseline), the error rate uses ``floor(N / block)`` blocks and the F1 ``ceil(N / block)`` blocks, F1 adds
    1e-8 to its denominators and the error rate adds nothing;
  - ``"segment"``: the standard segment-based metric, equal to ``sed_eval.sound_event.SegmentBasedMetrics``
    overall error rate and F1 (1 s segments by default, per file, every frame of a segment counted).

  :func:`segment_based_metrics` gives the same standard metric on event lists ``(filename, onset, offset, label)``.
* Acoustic scene classification: :func:`asc_accuracy` (mean of the per-crop softmax over the 3 test-time crops, then
  argmax; percent) and :func:`macro_f1`.

Example:
    >>> import numpy as np
    >>> from dcasenet_hub import metrics
    >>> truth = np.array([[1, 0, 0], [0, 1, 1]])
    >>> scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.7, 0.1]])
    >>> round(metrics.lwlrap(truth, scores), 4)
    0.7222
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "PAPER_BLOCK_FRAMES",
    "PAPER_THRESHOLD",
    "SedScores",
    "asc_accuracy",
    "average_crops",
    "lwlrap",
    "lwlrap_per_class",
    "macro_f1",
    "mean_average_precision",
    "roll_to_events",
    "sed_scores",
    "segment_based_metrics",
]

#: Rows per block in the authors' SED metric (``nb_frames_1s = 50``; 5 s at the 100 ms label rate).
PAPER_BLOCK_FRAMES = 50
#: Threshold on the channel-averaged event probabilities in the authors' evaluation (``-sed_threshold 0.3``).
PAPER_THRESHOLD = 0.3
_PAPER_EPS = 1e-8
_SED_EVAL_EPS = float(np.spacing(1))


# ---------------------------------------------------------------------------------------------------------------------
# Audio tagging
# ---------------------------------------------------------------------------------------------------------------------


def _as_2d_pair(truth: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != scores.shape:
        raise ValueError(
            f"truth and scores must be 2-D arrays of the same shape (samples, classes); got {truth.shape} and "
            f"{scores.shape}"
        )
    return truth, scores


def lwlrap_per_class(truth: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and the class weights (share of all positive labels).

    Same definition as the DCASE2019 Task 2 reference: for each sample with at least one positive label, classes are
    ranked by ``np.argsort(scores)[::-1]`` (so ties are broken by argsort order, as in the reference), and each
    positive class gets the precision of the ranked list cut at its rank. A class's lwlrap is the mean of those
    precisions over the samples where it is positive (0 if it is never positive).

    Args:
        truth: (samples, classes) ground truth; a label is positive where ``truth > 0``.
        scores: (samples, classes) real-valued scores (probabilities or logits).

    Returns:
        ``(per_class_lwlrap, weight_per_class)``, both ``(classes,)`` float64; ``lwlrap = sum(per_class * weight)``.

    Example:
        >>> per_class, weight = lwlrap_per_class([[1, 0], [1, 1]], [[0.2, 0.9], [0.5, 0.4]])
        >>> per_class.round(3).tolist(), weight.round(3).tolist()
        ([0.75, 1.0], [0.667, 0.333])
    """
    truth, scores = _as_2d_pair(truth, scores)
    n_samples, n_classes = scores.shape
    positive = truth > 0
    precisions = np.zeros((n_samples, n_classes))
    for i in range(n_samples):
        pos = np.flatnonzero(positive[i])
        if pos.size == 0:
            continue
        order = np.argsort(scores[i])[::-1]  # rank 0 = highest score; the reference's tie order
        rank = np.empty(n_classes, dtype=np.int64)
        rank[order] = np.arange(n_classes)
        hit = np.zeros(n_classes, dtype=bool)
        hit[rank[pos]] = True
        cumulative_hits = np.cumsum(hit)
        precisions[i, pos] = cumulative_hits[rank[pos]] / (1.0 + rank[pos].astype(np.float64))
    labels_per_class = positive.sum(axis=0)
    total = labels_per_class.sum()
    weight = labels_per_class / float(total) if total else np.zeros(n_classes)
    per_class = precisions.sum(axis=0) / np.maximum(1, labels_per_class)
    return per_class, weight


def lwlrap(truth: Any, scores: Any) -> float:
    """Label-weighted label-ranking average precision (DCASE2019 Task 2 metric).

    Equals the mean, over all (sample, positive label) pairs, of the precision of the sample's ranked label list cut
    at that label. Samples without a positive label do not count.

    Args:
        truth: (samples, classes) ground truth; positive where ``truth > 0``.
        scores: (samples, classes) scores.

    Returns:
        lwlrap in [0, 1] (0.0 when there is no positive label at all).

    Example:
        >>> lwlrap([[1, 0, 0], [0, 1, 1]], [[0.9, 0.2, 0.1], [0.8, 0.7, 0.1]])  # doctest: +ELLIPSIS
        0.722...
    """
    per_class, weight = lwlrap_per_class(truth, scores)
    return float(np.sum(per_class * weight))


def _average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Non-interpolated AP of one class; tied scores form one threshold (scikit-learn's definition)."""
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    t = truth[order]
    distinct = np.flatnonzero(np.diff(s)) if s.size > 1 else np.zeros(0, dtype=np.int64)
    ends = np.r_[distinct, s.size - 1]  # last index of each group of tied scores
    tp = np.cumsum(t)[ends]
    n_retrieved = ends + 1
    precision = tp / n_retrieved
    recall = tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(truth: Any, scores: Any) -> float:
    """Macro mean average precision over the classes that have at least one positive sample.

    AP per class is the non-interpolated area ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
    (tied scores are one threshold), the same value as ``sklearn.metrics.average_precision_score``.

    Args:
        truth: (samples, classes) ground truth; positive where ``truth > 0``.
        scores: (samples, classes) scores.

    Returns:
        The mean AP (float); ``nan`` if no class has a positive sample.

    Example:
        >>> mean_average_precision([[1, 0], [0, 1], [1, 0]], [[0.9, 0.1], [0.8, 0.7], [0.3, 0.2]])  # doctest: +ELLIPSIS
        0.916...
    """
    truth, scores = _as_2d_pair(truth, scores)
    positive = (truth > 0).astype(np.float64)
    aps = [_average_precision(positive[:, c], scores[:, c]) for c in range(truth.shape[1]) if positive[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# Sound event detection
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SedScores:
    """Error rate and F1 of a sound event detection evaluation.

    Attributes:
        er: error rate ``(S + D + I) / N_ref`` (lower is better).
        f1: micro F1 over all (segment, class) cells, in [0, 1].
        precision: ``TP / N_sys`` of the F1 computation.
        recall: ``TP / N_ref`` of the F1 computation.
        protocol: ``"paper"`` or ``"segment"``.
    """

    er: float
    f1: float
    precision: float
    recall: float
    protocol: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_files(x: Any, name: str) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        files = [np.asarray(a) for a in x]
    else:
        arr = np.asarray(x)
        if arr.ndim == 2:
            files = [arr]
        elif arr.ndim == 3:
            files = list(arr)
        else:
            raise ValueError(f"{name} must be (frames, classes), (files, frames, classes) or a list of 2-D arrays; "
                             f"got shape {arr.shape}")
    for a in files:
        if a.ndim != 2:
            raise ValueError(f"every file of {name} must be a 2-D (frames, classes) array; got shape {a.shape}")
    return files


def _binarize(a: np.ndarray, threshold: float) -> np.ndarray:
    if a.dtype == bool:
        return a.astype(np.int64)
    return (a > threshold).astype(np.int64)


def _paper_blocks(rows: np.ndarray, block: int, n_blocks: int) -> np.ndarray:
    # block i = max over rows [i*block, i*block + block - 1): the last row of every block is ignored (off-by-one)
    out = np.zeros((n_blocks, rows.shape[1]))
    for i in range(n_blocks):
        out[i] = np.max(rows[i * block: i * block + block - 1], axis=0)
    return out


def _paper_f1(o: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    tp = float(((2 * t - o) == 1).sum())
    n_ref, n_sys = float(t.sum()), float(o.sum())
    precision = tp / (n_sys + _PAPER_EPS)
    recall = tp / (n_ref + _PAPER_EPS)
    return 2 * precision * recall / (precision + recall + _PAPER_EPS), precision, recall


def _paper_er(o: np.ndarray, t: np.ndarray) -> float:
    fp = np.logical_and(t == 0, o == 1).sum(axis=1)
    fn = np.logical_and(t == 1, o == 0).sum(axis=1)
    errors = np.minimum(fp, fn).sum() + np.maximum(0, fn - fp).sum() + np.maximum(0, fp - fn).sum()
    n_ref = float(t.sum())
    if n_ref == 0:
        return float("nan") if errors == 0 else float("inf")
    return float(errors) / n_ref


def _segment_counts(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Sum of (Ntp, Nref, Nsys, S, D, I) over the segments (rows) of two binary segment rolls."""
    n_tp = (ref + est > 1).sum(axis=1)
    n_ref = ref.sum(axis=1)
    n_sys = est.sum(axis=1)
    s = np.minimum(n_ref, n_sys) - n_tp
    d = np.maximum(0, n_ref - n_sys)
    i = np.maximum(0, n_sys - n_ref)
    return np.array([n_tp.sum(), n_ref.sum(), n_sys.sum(), s.sum(), d.sum(), i.sum()], dtype=np.int64)


def _segment_scores(counts: np.ndarray) -> SedScores:
    n_tp, n_ref, n_sys, s, d, i = (int(v) for v in counts)
    # sed_eval: P/R are NaN when their denominator is 0, F = 0 when P = R = 0; rates use eps = spacing(1)
    precision = float(n_tp / float(n_sys)) if n_sys else float("nan")
    recall = float(n_tp / float(n_ref)) if n_ref else float("nan")
    if precision == 0 and recall == 0:
        f1 = 0.0
    else:
        f1 = float(2 * precision * recall / (precision + recall))
    er = float(s / (n_ref + _SED_EVAL_EPS)) + float(d / (n_ref + _SED_EVAL_EPS)) + float(i / (n_ref + _SED_EVAL_EPS))
    return SedScores(er=float(er), f1=f1, precision=precision, recall=recall, protocol="segment")


def _frames_per_segment(segment_length: float, frame_hop: float) -> int:
    k = round(segment_length / frame_hop)
    if k < 1 or abs(k * frame_hop - segment_length) > 1e-9 * max(1.0, segment_length):
        raise ValueError(
            f"segment_length={segment_length} s is not a whole number of frames of {frame_hop} s; "
            "use event lists with segment_based_metrics() for arbitrary resolutions"
        )
    return k


def sed_scores(
    pred_or_probs: Any,
    truth: Any,
    *,
    protocol: str = "paper",
    threshold: float = PAPER_THRESHOLD,
    block_frames: int = PAPER_BLOCK_FRAMES,
    frame_hop: float = 0.1,
    segment_length: float = 1.0,
) -> SedScores:
    """Sound event detection error rate and F1 from frame-level activity.

    Args:
        pred_or_probs: predictions per file: ``(files, frames, classes)``, ``(frames, classes)`` (one file) or a list
            of ``(frames_i, classes)`` arrays. Boolean arrays are used as they are; any other array is binarised with
            ``> threshold`` (so 0/1 predictions and probabilities both work). For the authors' evaluation pass the
            mean of the 4 channel probabilities per recording.
        truth: reference activity, same layout and frame rate as ``pred_or_probs`` (non-zero = active).
        protocol: ``"paper"`` (the authors' computation, exactly) or ``"segment"`` (standard segment-based metric,
            equal to sed_eval's ``SegmentBasedMetrics`` with ``time_resolution=segment_length``, each file evaluated
            over its full length ``frames * frame_hop``).
        threshold: binarisation threshold for non-boolean input (the authors: 0.3).
        block_frames: ``"paper"`` only: rows per block (authors: 50 = 5 s at 100 ms; the DCASE2020 baseline's legacy
            score uses 10).
        frame_hop: ``"segment"`` only: seconds per frame (0.1 for TAU-NIGENS labels and DcaseNet's event output).
        segment_length: ``"segment"`` only: segment length in seconds (a whole number of frames).

    Returns:
        :class:`SedScores` with ``er`` and ``f1``.

    Example:
        >>> import numpy as np
        >>> truth = np.zeros((2, 600, 14)); truth[:, 100:200, 3] = 1
        >>> probs = 0.9 * truth
        >>> s = sed_scores(probs, truth)
        >>> round(s.er, 6), round(s.f1, 6)
        (0.0, 1.0)
    """
    preds = _split_files(pred_or_probs, "pred_or_probs")
    refs = _split_files(truth, "truth")
    if len(preds) != len(refs):
        raise ValueError(f"pred_or_probs has {len(preds)} files but truth has {len(refs)}")
    for k, (p, t) in enumerate(zip(preds, refs)):
        if p.shape != t.shape:
            raise ValueError(f"file {k}: prediction shape {p.shape} differs from truth shape {t.shape}")
    preds = [_binarize(p, threshold) for p in preds]
    refs = [(np.asarray(t) != 0).astype(np.int64) for t in refs]

    if protocol == "paper":
        if int(block_frames) < 2:
            raise ValueError(f"block_frames must be >= 2 (each block uses its first block_frames - 1 rows); got {block_frames}")
        block = int(block_frames)
        o = np.concatenate(preds, axis=0)
        t = np.concatenate(refs, axis=0)
        n = o.shape[0]
        if n == 0:
            raise ValueError("no frames to evaluate")
        n_f1 = math.ceil(n / block)
        f1, precision, recall = _paper_f1(_paper_blocks(o, block, n_f1), _paper_blocks(t, block, n_f1))
        n_er = n // block
        er = _paper_er(_paper_blocks(o, block, n_er), _paper_blocks(t, block, n_er))
        return SedScores(er=er, f1=float(f1), precision=float(precision), recall=float(recall), protocol="paper")

    if protocol == "segment":
        k = _frames_per_segment(segment_length, frame_hop)
        counts = np.zeros(6, dtype=np.int64)
        for p, t in zip(preds, refs):
            n_seg = math.ceil(p.shape[0] / k)
            pad = n_seg * k - p.shape[0]
            p = np.pad(p, ((0, pad), (0, 0))).reshape(n_seg, k, -1).max(axis=1)
            t = np.pad(t, ((0, pad), (0, 0))).reshape(n_seg, k, -1).max(axis=1)
            counts += _segment_counts(t, p)
        return _segment_scores(counts)

    raise ValueError(f"protocol must be 'paper' or 'segment'; got {protocol!r}")


Event = tuple[str, float, float, str]


def segment_based_metrics(
    reference_events: Iterable[Sequence[Any]],
    estimated_events: Iterable[Sequence[Any]],
    *,
    time_resolution: float = 1.0,
    evaluated_length: float | dict[str, float] | None = None,
    labels: Sequence[str] | None = None,
) -> SedScores:
    """Standard segment-based SED metric on event lists (equal to sed_eval's overall ER and F1).

    Each file is evaluated on its own (like calling ``SegmentBasedMetrics.evaluate`` once per file) and the counts are
    summed. Within a file an event makes segments ``floor(onset / res)`` to ``ceil(offset / res) - 1`` active for its
    label; per segment ``S = min(Nref, Nsys) - Ntp``, ``D = max(0, Nref - Nsys)``, ``I = max(0, Nsys - Nref)``.
    Files that appear only in ``estimated_events`` count as well (all their events are insertions).

    Args:
        reference_events: iterable of ``(filename, onset_s, offset_s, label)``.
        estimated_events: iterable of ``(filename, onset_s, offset_s, label)``.
        time_resolution: segment length in seconds.
        evaluated_length: seconds evaluated per file: one number for all files, a ``{filename: seconds}`` dict, or
            None for sed_eval's default (the largest event offset of the file, so trailing silence is not counted;
            pass the real file length to count it).
        labels: the label set; default: every label seen. Events with other labels raise ``ValueError``.

    Returns:
        :class:`SedScores` (``protocol="segment"``).

    Example:
        >>> ref = [("a.wav", 0.5, 2.3, "dog")]
        >>> est = [("a.wav", 0.7, 3.3, "dog")]
        >>> s = segment_based_metrics(ref, est)
        >>> round(s.er, 4), round(s.f1, 4)
        (0.3333, 0.8571)
    """
    ref = [tuple(e) for e in reference_events]
    est = [tuple(e) for e in estimated_events]
    for e in ref + est:
        if len(e) != 4:
            raise ValueError(f"events must be (filename, onset, offset, label); got {e!r}")
    label_list = list(labels) if labels is not None else sorted({e[3] for e in ref + est})
    index = {label: i for i, label in enumerate(label_list)}
    unknown = sorted({e[3] for e in ref + est} - set(index))
    if unknown:
        raise ValueError(f"events with labels not in `labels`: {unknown}")
    files = list(dict.fromkeys([e[0] for e in ref] + [e[0] for e in est]))
    res = float(time_resolution)
    counts = np.zeros(6, dtype=np.int64)

    def roll(events: list[tuple], n: int) -> np.ndarray:
        r = np.zeros((n, len(label_list)), dtype=np.int64)
        for _, onset, offset, label in events:
            r[math.floor(onset * 1 / res): math.ceil(offset * 1 / res), index[label]] = 1
        return r

    for name in files:
        ref_f = [e for e in ref if e[0] == name]
        est_f = [e for e in est if e[0] == name]
        if evaluated_length is None:
            length = max([0.0] + [float(e[2]) for e in ref_f + est_f])
        elif isinstance(evaluated_length, dict):
            if name not in evaluated_length:
                raise ValueError(f"evaluated_length has no entry for file {name!r}")
            length = float(evaluated_length[name])
        else:
            length = float(evaluated_length)
        n_seg = math.ceil(length * 1 / res)
        n_roll = max([n_seg] + [math.ceil(float(e[2]) * 1 / res) for e in ref_f + est_f])
        counts += _segment_counts(roll(ref_f, n_roll)[:n_seg], roll(est_f, n_roll)[:n_seg])
    return _segment_scores(counts)


def roll_to_events(
    roll: Any, *, frame_hop: float = 0.1, labels: Sequence[str] | None = None, filename: str = ""
) -> list[Event]:
    """Convert a binary activity roll ``(frames, classes)`` to events ``(filename, onset, offset, label)``.

    Each run of consecutive active frames of a class becomes one event from ``start * frame_hop`` to
    ``end * frame_hop`` seconds (times computed as ``frame / (1 / frame_hop)`` so 0.1 s frames give exact decimals).

    Example:
        >>> roll_to_events([[0, 1], [1, 1], [0, 0]], labels=["a", "b"], filename="x.wav")
        [('x.wav', 0.1, 0.2, 'a'), ('x.wav', 0.0, 0.2, 'b')]
    """
    r = np.asarray(roll) != 0
    if r.ndim != 2:
        raise ValueError(f"roll must be (frames, classes); got shape {r.shape}")
    names = list(labels) if labels is not None else [str(c) for c in range(r.shape[1])]
    if len(names) != r.shape[1]:
        raise ValueError(f"{len(names)} labels for a roll with {r.shape[1]} classes")
    rate = 1.0 / frame_hop
    events: list[Event] = []
    for c in range(r.shape[1]):
        edges = np.diff(np.r_[0, r[:, c].astype(np.int8), 0])
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            events.append((filename, float(start / rate), float(end / rate), names[c]))
    return events


# ---------------------------------------------------------------------------------------------------------------------
# Acoustic scene classification
# ---------------------------------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def average_crops(crop_outputs: Any, *, n_crops: int = 3, from_logits: bool = True) -> np.ndarray:
    """Mean over test-time crops of the per-crop class probabilities.

    Args:
        crop_outputs: ``(files, n_crops, classes)`` or ``(files * n_crops, classes)`` with each file's crops
            consecutive (the authors' ``view(B * 3, ...)`` order).
        n_crops: crops per file (3 in the paper).
        from_logits: apply a softmax per crop first (True for logits); False if the values are probabilities already.

    Returns:
        ``(files, classes)`` float64 averaged probabilities.

    Example:
        >>> average_crops([[0.0, 0.0], [0.0, 2.0], [0.0, -2.0]]).round(3).tolist()
        [[0.5, 0.5]]
    """
    x = np.asarray(crop_outputs, dtype=np.float64)
    if x.ndim == 2:
        if n_crops < 1 or x.shape[0] % n_crops:
            raise ValueError(f"{x.shape[0]} rows is not a multiple of n_crops={n_crops}")
        x = x.reshape(x.shape[0] // n_crops, n_crops, x.shape[1])
    elif x.ndim != 3 or x.shape[1] != n_crops:
        raise ValueError(f"crop_outputs must be (files, {n_crops}, classes) or (files*{n_crops}, classes); got {x.shape}")
    probs = _softmax(x) if from_logits else x
    return probs.mean(axis=1)


def asc_accuracy(crop_probs_or_logits: Any, labels: Any, *, n_crops: int = 3, from_logits: bool = True) -> float:
    """Scene accuracy in percent with the paper's test-time averaging (mean of per-crop softmax, then argmax).

    Args:
        crop_probs_or_logits: per-crop outputs, see :func:`average_crops`. Use ``n_crops=1`` for one output per file.
        labels: ``(files,)`` integer class indices.
        n_crops: crops per file.
        from_logits: whether the outputs are logits (softmax applied per crop) or probabilities.

    Returns:
        ``100 * correct / files``.

    Example:
        >>> asc_accuracy([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0], [0.0, 1.0], [2.0, 0.0]], [0, 0])
        50.0
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    avg = average_crops(crop_probs_or_logits, n_crops=n_crops, from_logits=from_logits)
    if avg.shape[0] != labels.shape[0]:
        raise ValueError(f"{avg.shape[0]} files of outputs but {labels.shape[0]} labels")
    if labels.size == 0:
        raise ValueError("no files to evaluate")
    return float(100.0 * np.mean(avg.argmax(axis=1) == labels))


def macro_f1(predictions: Any, labels: Any, *, n_classes: int | None = None) -> float:
    """Macro-averaged F1 of single-label (scene) predictions.

    Args:
        predictions: ``(N,)`` predicted class indices, or ``(N, classes)`` scores (argmax taken).
        labels: ``(N,)`` true class indices.
        n_classes: number of classes to average over; default: the classes present in ``labels`` or ``predictions``.

    Returns:
        Mean over classes of ``2 TP / (2 TP + FP + FN)`` (a class with no true and no predicted sample scores 0).

    Example:
        >>> macro_f1([0, 1, 1, 2], [0, 1, 2, 2])  # doctest: +ELLIPSIS
        0.777...
    """
    pred = np.asarray(predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.astype(np.int64).reshape(-1)
    true = np.asarray(labels).astype(np.int64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {true.shape[0]} labels")
    classes = range(n_classes) if n_classes is not None else np.union1d(pred, true)
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else float("nan")
