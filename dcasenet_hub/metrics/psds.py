"""Polyphonic sound detection score (PSDS) of frame scores, computed by sed_scores_eval (an optional extra).

PSDS is threshold-free: it integrates the detection's ROC over all thresholds. The reference implementation is the
maintained ``sed_scores_eval`` library (Ebbers et al., ICASSP 2022, the exact computation DCASE uses since 2022);
this module only converts the package's arrays to its inputs and runs the two DCASE 2021 task 4 scenarios. It
imports sed_scores_eval on first use; without it :class:`~dcasenet_hub.errors.SedScoresEvalUnavailableError` says
what to install.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcasenet_hub.errors import SedScoresEvalUnavailableError

#: The two PSDS operating points of DCASE 2021 task 4 (sed_scores_eval's argument names).
PSDS_SCENARIOS: dict[str, dict[str, Any]] = {
    "scenario1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0,
                  "alpha_st": 1.0, "max_efpr": 100.0},
    "scenario2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5,
                  "alpha_st": 1.0, "max_efpr": 100.0},
}


@dataclass
class PsdsResult:
    """PSDS of one scenario.

    Attributes:
        value: the PSDS (area under the effective PSD-ROC up to ``max_efpr``, normalised), in [0, 1].
        class_values: PSDS of each class's own ROC.
        roc: ``(effective TPR, effective FPR per hour)`` of the whole system.
        class_rocs: ``{label: (TPR, effective FPR per hour, thresholds)}``.
        params: the scenario's parameters.
    """

    value: float
    class_values: dict[str, float]
    roc: tuple[np.ndarray, np.ndarray]
    class_rocs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(repr=False)
    params: dict[str, Any]


def merge_overlaps(events: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Merge events of one label that overlap or touch into one (sed_scores_eval refuses connected events).

    Example:
        >>> merge_overlaps([(0.0, 2.0, "dog"), (1.0, 3.0, "dog"), (1.0, 1.5, "cat")])
        [(0.0, 3.0, 'dog'), (1.0, 1.5, 'cat')]
    """
    out: list[list[Any]] = []
    for onset, offset, label in sorted(events, key=lambda e: (e[2], e[0], e[1])):
        if out and out[-1][2] == label and onset <= out[-1][1]:
            out[-1][1] = max(out[-1][1], offset)
        else:
            out.append([onset, offset, label])
    return sorted(((float(a), float(b), c) for a, b, c in out), key=lambda e: (e[0], e[1], e[2]))


def _sed_scores_eval() -> Any:
    import warnings

    try:
        with warnings.catch_warnings():  # its dependency dcase_util imports pkg_resources, which warns on import
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import sed_scores_eval
            import sed_scores_eval.intersection_based
    except ImportError as exc:
        raise SedScoresEvalUnavailableError(SedScoresEvalUnavailableError.MESSAGE) from exc
    return sed_scores_eval


def score_dataframes(scores: Mapping[str, tuple[Any, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """sed_scores_eval's score DataFrames from ``{file: (timestamps (T + 1,), probs (T, C))}``."""
    _sed_scores_eval()
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    return {name: create_score_dataframe(np.asarray(p, dtype=np.float64),
                                                           np.asarray(t, dtype=np.float64), list(labels))
            for name, (t, p) in scores.items()}


def psds_scores(
    scores: Mapping[str, tuple[Any, Any]],
    ground_truth: Mapping[str, Sequence[tuple[float, float, str]]],
    durations: Mapping[str, float],
    *,
    labels: Sequence[str],
    scenarios: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, PsdsResult]:
    """PSDS of frame scores against reference events, one result per scenario (default: DCASE 2021's two).

    Args:
        scores: ``{file: (timestamps, probs)}``: ``timestamps`` ``(T + 1,)`` frame boundaries in seconds,
            ``probs`` ``(T, len(labels))``.
        ground_truth: ``{file: [(onset, offset, label), ...]}`` (every file of ``scores``; ``[]`` for a file
            without events). Overlapping or touching events of one label are merged first.
        durations: ``{file: seconds}`` (every file of ``scores``).
        labels: the class names of the score columns.
        scenarios: ``{name: sed_scores_eval.intersection_based.psds keyword arguments}``.

    Raises:
        SedScoresEvalUnavailableError: sed_scores_eval is not installed.
    """
    lib = _sed_scores_eval()
    frames = score_dataframes(scores, labels)
    truth = {name: [list(e) for e in merge_overlaps(ground_truth[name])] for name in frames}
    lengths = {name: float(durations[name]) for name in frames}
    out = {}
    for name, params in (scenarios or PSDS_SCENARIOS).items():
        run = dict(params)
        if len(labels) == 1 and run.get("cttc_threshold") is not None:
            # one class has no cross-triggers (the term is 0); sed_scores_eval 0.0.4 fails on the empty statistics
            run.update(cttc_threshold=None, alpha_ct=0.0)
        value, class_values, roc, class_rocs = lib.intersection_based.psds(
            scores=frames, ground_truth=truth, audio_durations=lengths, **run)
        out[name] = PsdsResult(
            value=float(value),
            class_values={k: float(v) for k, v in class_values.items()},
            roc=(np.asarray(roc[0], dtype=np.float64), np.asarray(roc[1], dtype=np.float64)),
            class_rocs={k: tuple(np.asarray(a, dtype=np.float64) for a in v) for k, v in class_rocs.items()},
            params=dict(params))
    return out
