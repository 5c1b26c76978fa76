"""Evaluation metrics of the three DcaseNet tasks (numpy only).

* Audio tagging: :func:`lwlrap` (the DCASE2019 Task 2 metric) and :func:`mean_average_precision` (macro mAP).
* Sound event detection: :func:`sed_scores` with ``protocol="paper"`` (the authors' computation, quirks included, so
  numbers compare with the paper's Table 2: 5 s blocks, not 1 s) or ``"segment"`` (sed_eval's segment-based error
  rate and F1); :func:`segment_based_metrics` and :func:`event_based_metrics` on event lists; :func:`psds_scores`
  (optional extra ``score``). The protocols differ in detail: docs/facts.md §4.1.
* Acoustic scene classification: :func:`asc_accuracy` (the authors' 3-crop test-time averaging), :func:`macro_f1`,
  :func:`confusion_matrix`.
* Scoring predictions against your own annotations (DCASE/DESED, Raven, Audacity, ``filename,label``): :func:`score`
  -> :class:`ScoreReport`, :func:`read_annotations`.

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
