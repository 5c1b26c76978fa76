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
  :func:`event_based_metrics` gives sed_eval's event-based F1 (DCASE: 200 ms collar); :func:`psds_scores` the
  threshold-free PSDS of frame scores through sed_scores_eval (optional extra ``score``).
* Acoustic scene classification: :func:`asc_accuracy` (mean of the per-crop softmax over the 3 test-time crops, then
  argmax; percent), :func:`macro_f1` and :func:`confusion_matrix`.
* Scoring predictions on your own annotations: :func:`score` (a ``predict`` folder or ``Prediction`` objects against
  DCASE/DESED, Raven, Audacity or ``filename,label`` files read by :func:`read_annotations`) -> :class:`ScoreReport`.

Example:
    >>> import numpy as np
    >>> from dcasenet_hub import metrics
    >>> truth = np.array([[1, 0, 0], [0, 1, 1]])
    >>> scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.7, 0.1]])
    >>> round(metrics.lwlrap(truth, scores), 4)
    0.7222
"""


from dcasenet_hub.metrics.annotations import Annotations, read_annotations
from dcasenet_hub.metrics.events import (
    PAPER_BLOCK_FRAMES,
    PAPER_THRESHOLD,
    EventBasedScores,
    SedScores,
    event_based_metrics,
    roll_to_events,
    sed_scores,
    segment_based_metrics,
)
from dcasenet_hub.metrics.psds import PSDS_SCENARIOS, PsdsResult, psds_scores
from dcasenet_hub.metrics.report import ScoreReport, score
from dcasenet_hub.metrics.scenes import (
    asc_accuracy,
    average_crops,
    confusion_matrix,
    macro_f1,
)
from dcasenet_hub.metrics.tagging import (
    average_precision,
    f1_at_threshold,
    lwlrap,
    lwlrap_per_class,
    mean_average_precision,
    precision_recall_curve,
)

__all__ = [
    "PAPER_BLOCK_FRAMES",
    "PAPER_THRESHOLD",
    "PSDS_SCENARIOS",
    "Annotations",
    "EventBasedScores",
    "PsdsResult",
    "ScoreReport",
    "SedScores",
    "asc_accuracy",
    "average_crops",
    "average_precision",
    "confusion_matrix",
    "event_based_metrics",
    "f1_at_threshold",
    "lwlrap",
    "lwlrap_per_class",
    "macro_f1",
    "mean_average_precision",
    "precision_recall_curve",
    "psds_scores",
    "read_annotations",
    "roll_to_events",
    "score",
    "sed_scores",
    "segment_based_metrics",
]
