"""Audio tagging metrics: lwlrap (DCASE2019 Task 2) and macro mAP (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


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


def average_precision(truth: Any, scores: Any) -> np.ndarray:
    """Average precision of each class (``sklearn.metrics.average_precision_score(..., average=None)``).

    Args:
        truth: (samples, classes) ground truth; positive where ``truth > 0``.
        scores: (samples, classes) scores.

    Returns:
        ``(classes,)`` float64; NaN for a class without a positive sample (its AP is undefined).

    Example:
        >>> average_precision([[1, 0], [0, 1], [1, 0]], [[0.9, 0.1], [0.8, 0.7], [0.3, 0.2]]).round(4).tolist()
        [0.8333, 1.0]
    """
    truth, scores = _as_2d_pair(truth, scores)
    positive = (truth > 0).astype(np.float64)
    return np.array([_average_precision(positive[:, c], scores[:, c]) if positive[:, c].any() else float("nan")
                     for c in range(truth.shape[1])], dtype=np.float64)


def precision_recall_curve(truth: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of one class at each distinct score threshold, highest threshold first.

    Tied scores are one threshold (as ``sklearn.metrics.precision_recall_curve``, without its final (1, 0) point).

    Returns:
        ``(precision, recall, thresholds)``, each ``(thresholds,)`` float64.
    """
    t = (np.asarray(truth).reshape(-1) > 0).astype(np.float64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"truth has {t.size} values but scores has {s.size}")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=np.int64)
    tp = np.cumsum(t)[ends]
    n_pos = t.sum()
    recall = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
    return tp / (ends + 1), recall, s[ends]


def f1_at_threshold(truth: Any, scores: Any, threshold: float | Any) -> tuple[float, float, np.ndarray]:
    """Micro F1, macro F1 and per-class F1 of ``scores > threshold`` (scikit-learn's ``f1_score``, zero_division=0).

    Args:
        truth: (samples, classes) ground truth; positive where ``truth > 0``.
        scores: (samples, classes) scores.
        threshold: one threshold, or one per class (``(classes,)``).

    Example:
        >>> micro, macro, per_class = f1_at_threshold([[1, 0], [0, 1]], [[0.9, 0.4], [0.2, 0.1]], 0.3)
        >>> round(micro, 4), round(macro, 4), per_class.tolist()
        (0.5, 0.5, [1.0, 0.0])
    """
    truth, scores = _as_2d_pair(truth, scores)
    positive = truth > 0
    decided = scores > np.asarray(threshold, dtype=np.float64)
    tp = (positive & decided).sum(axis=0).astype(np.float64)
    fp = (~positive & decided).sum(axis=0).astype(np.float64)
    fn = (positive & ~decided).sum(axis=0).astype(np.float64)
    denom = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / micro_denom) if micro_denom else 0.0
    return micro, float(per_class.mean()) if per_class.size else float("nan"), per_class
