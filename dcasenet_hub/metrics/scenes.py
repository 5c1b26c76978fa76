"""Acoustic scene classification metrics: 3-crop accuracy and macro F1 (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


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


def confusion_matrix(predictions: Any, labels: Any, *, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of files of true class ``i`` predicted as class ``j`` (``sklearn.metrics.confusion_matrix``).

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0], n_classes=2).tolist()
        [[1, 1], [0, 1]]
    """
    pred = np.asarray(predictions).astype(np.int64).reshape(-1)
    true = np.asarray(labels).astype(np.int64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions but {true.shape[0]} labels")
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (true, pred), 1)
    return out
