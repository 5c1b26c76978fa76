"""Sound event detection metrics: the authors' "paper" protocol and the standard segment-based one (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Rows per block in the authors' SED metric (``nb_frames_1s = 50``; 5 s at the 100 ms label rate).
PAPER_BLOCK_FRAMES = 50
#: Threshold on the channel-averaged event probabilities in the authors' evaluation (``-sed_threshold 0.3``).
PAPER_THRESHOLD = 0.3
_PAPER_EPS = 1e-8
_SED_EVAL_EPS = float(np.spacing(1))



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
    class_f1: dict[str, float] | None = None

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


def _f_measure(n_tp: float, n_ref: float, n_sys: float, *, zero_score: bool = False) -> tuple[float, float, float]:
    """sed_eval's (F, P, R): P/R are NaN when their denominator is 0 (P = 0 with ``zero_score``), F = 0 when
    P = R = 0."""
    precision = float(n_tp / float(n_sys)) if n_sys else (0.0 if zero_score else float("nan"))
    recall = float(n_tp / float(n_ref)) if n_ref else float("nan")
    if precision == 0 and recall == 0:
        return 0.0, precision, recall
    return float(2 * precision * recall / (precision + recall)), precision, recall


def _segment_scores(counts: np.ndarray, class_f1: dict[str, float] | None = None) -> SedScores:
    n_tp, n_ref, n_sys, s, d, i = (int(v) for v in counts)
    # sed_eval: rates use eps = spacing(1)
    f1, precision, recall = _f_measure(n_tp, n_ref, n_sys)
    er = float(s / (n_ref + _SED_EVAL_EPS)) + float(d / (n_ref + _SED_EVAL_EPS)) + float(i / (n_ref + _SED_EVAL_EPS))
    return SedScores(er=float(er), f1=f1, precision=precision, recall=recall, protocol="segment", class_f1=class_f1)


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
        :class:`SedScores` (``protocol="segment"``); ``class_f1`` is sed_eval's class-wise F1 per label (NaN for a
        label that is neither in the reference nor in the estimate).

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
    per_class = np.zeros((3, len(label_list)), dtype=np.int64)  # Ntp, Nref, Nsys of each label

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
        ref_roll, est_roll = roll(ref_f, n_roll)[:n_seg], roll(est_f, n_roll)[:n_seg]
        counts += _segment_counts(ref_roll, est_roll)
        per_class += np.stack([(ref_roll + est_roll > 1).sum(axis=0), ref_roll.sum(axis=0), est_roll.sum(axis=0)])
    class_f1 = {label: _f_measure(*per_class[:, c])[0] for c, label in enumerate(label_list)}
    return _segment_scores(counts, class_f1)


@dataclass(frozen=True)
class EventBasedScores:
    """Event-based F1 of a sound event detection evaluation (sed_eval's ``EventBasedMetrics``).

    Attributes:
        f1: micro F1 over all events: ``2 TP / (N_ref + N_sys)``.
        precision: ``TP / N_sys``.
        recall: ``TP / N_ref``.
        macro_f1: mean of the class-wise F1 over the labels that have reference events (DCASE's event-based F1).
        class_f1: F1 per label (NaN for a label without reference events).
        t_collar: onset (and minimum offset) tolerance in seconds.
        percentage_of_length: offset tolerance as a share of the reference event's length.
    """

    f1: float
    precision: float
    recall: float
    macro_f1: float
    class_f1: dict[str, float]
    t_collar: float
    percentage_of_length: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _max_matching(hits: list[list[int]], n_right: int) -> int:
    """Size of a maximum matching of a bipartite graph given as the right neighbours of each left vertex.

    The size of a maximum matching is unique, so it equals sed_eval's Hopcroft-Karp result (augmenting paths).
    """
    match_right = [-1] * n_right

    def augment(u: int, seen: list[bool]) -> bool:
        for v in hits[u]:
            if not seen[v]:
                seen[v] = True
                if match_right[v] < 0 or augment(match_right[v], seen):
                    match_right[v] = u
                    return True
        return False

    return sum(augment(u, [False] * n_right) for u in range(len(hits)))


def event_based_metrics(
    reference_events: Iterable[Sequence[Any]],
    estimated_events: Iterable[Sequence[Any]],
    *,
    t_collar: float = 0.2,
    percentage_of_length: float = 0.2,
    labels: Sequence[str] | None = None,
) -> EventBasedScores:
    """Event-based F1 with onset and offset conditions, as the DCASE challenge computes it with sed_eval.

    An estimated event matches a reference event of the same label and file when its onset is within ``t_collar``
    seconds of the reference onset and its offset within ``max(t_collar, percentage_of_length * reference length)``
    of the reference offset; each event matches at most once and the number of matches is the largest possible
    (sed_eval's ``event_matching_type="optimal"``). DCASE's sound event detection tasks use a 200 ms collar and
    ``percentage_of_length=0.2``, with ``empty_system_output_handling="zero_score"`` (a label that has reference
    events but no estimate scores F1 0), as here.

    Args:
        reference_events: iterable of ``(filename, onset_s, offset_s, label)``.
        estimated_events: iterable of ``(filename, onset_s, offset_s, label)``; files that are only here count as
            insertions.
        t_collar: onset tolerance in seconds.
        percentage_of_length: offset tolerance as a share of the reference event's length.
        labels: the label set; default: every label seen. Events with other labels raise ``ValueError``.

    Example:
        >>> ref = [("a.wav", 1.0, 2.0, "dog"), ("a.wav", 5.0, 6.0, "cat")]
        >>> est = [("a.wav", 1.1, 2.1, "dog"), ("a.wav", 5.5, 6.0, "cat")]
        >>> s = event_based_metrics(ref, est)
        >>> s.f1, s.class_f1
        (0.5, {'cat': 0.0, 'dog': 1.0})
    """
    ref = [tuple(e) for e in reference_events]
    est = [tuple(e) for e in estimated_events]
    for e in ref + est:
        if len(e) != 4:
            raise ValueError(f"events must be (filename, onset, offset, label); got {e!r}")
    label_list = list(labels) if labels is not None else sorted({e[3] for e in ref + est})
    unknown = sorted({e[3] for e in ref + est} - set(label_list))
    if unknown:
        raise ValueError(f"events with labels not in `labels`: {unknown}")
    counts = {label: np.zeros(3, dtype=np.int64) for label in label_list}  # Ntp, Nref, Nsys
    collar = float(t_collar)
    for name in dict.fromkeys([e[0] for e in ref] + [e[0] for e in est]):
        for label in label_list:
            r = [(float(e[1]), float(e[2])) for e in ref if e[0] == name and e[3] == label]
            s = [(float(e[1]), float(e[2])) for e in est if e[0] == name and e[3] == label]
            hits = [[i for i, (s_on, s_off) in enumerate(s)
                     if math.fabs(r_on - s_on) <= collar
                     and math.fabs(r_off - s_off) <= max(collar, percentage_of_length * (r_off - r_on))]
                    for r_on, r_off in r]
            counts[label] += (_max_matching(hits, len(s)), len(r), len(s))
    total = sum(counts.values(), np.zeros(3, dtype=np.int64))
    f1, precision, recall = _f_measure(*total, zero_score=True)
    class_f1 = {label: _f_measure(*c, zero_score=True)[0] for label, c in counts.items()}
    defined = [v for v in class_f1.values() if not math.isnan(v)]
    macro = float(np.mean(defined)) if defined else float("nan")
    return EventBasedScores(f1=f1, precision=precision, recall=recall, macro_f1=macro, class_f1=class_f1,
                            t_collar=collar, percentage_of_length=float(percentage_of_length))


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
