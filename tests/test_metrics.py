"""Metric parity: lwlrap and the authors' SED protocol against metric_reference.npz, the standard segment-based
protocol against sed_eval (stored results, and live when sed_eval is installed), plus hand-computed cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcasenet_hub import metrics

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "metric_reference.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def sed_eval_ref() -> dict:
    return json.loads((FIXTURES / "sed_eval_reference.json").read_text())


# --- lwlrap ------------------------------------------------------------------------------------------------------------


def test_lwlrap_matches_reference(ref):
    assert abs(metrics.lwlrap(ref["tag_truth"], ref["tag_scores"]) - float(ref["lwlrap"])) < 1e-9


def test_lwlrap_per_class_weights_sum_to_overall(ref):
    per_class, weight = metrics.lwlrap_per_class(ref["tag_truth"], ref["tag_scores"])
    assert per_class.shape == weight.shape == (80,)
    assert abs(weight.sum() - 1.0) < 1e-12
    assert abs(float(np.sum(per_class * weight)) - float(ref["lwlrap"])) < 1e-12


def test_lwlrap_hand_computed_and_ties():
    # sample 0: positive class 0 ranked 1st -> 1; sample 1: positives ranked 2nd and 3rd -> 1/2, 2/3
    assert metrics.lwlrap([[1, 0, 0], [0, 1, 1]], [[0.9, 0.2, 0.1], [0.8, 0.7, 0.1]]) == pytest.approx(
        (1 + 1 / 2 + 2 / 3) / 3, abs=1e-15
    )
    # ties are broken by argsort order reversed, like the reference: for all-equal scores np.argsort gives
    # 0, 1, 2, 3 and the reversed list ranks class 3 first, so positive class 3 gets precision 1
    assert metrics.lwlrap([[0, 0, 0, 1]], [[0.5, 0.5, 0.5, 0.5]]) == 1.0
    assert metrics.lwlrap([[1, 0, 0, 0]], [[0.5, 0.5, 0.5, 0.5]]) == 0.25
    # a sample without positives contributes nothing
    assert metrics.lwlrap([[1, 0], [0, 0]], [[0.9, 0.1], [0.9, 0.1]]) == 1.0


def test_lwlrap_equals_sklearn_weighted_lrap_on_continuous_scores():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = (rng.random((300, 80)) < 0.03).astype(int)
    truth[np.arange(300), rng.integers(0, 80, 300)] = 1
    scores = rng.random((300, 80))
    expected = sklearn_metrics.label_ranking_average_precision_score(truth, scores, sample_weight=truth.sum(1))
    assert abs(metrics.lwlrap(truth, scores) - expected) < 1e-12


def test_mean_average_precision_hand_computed():
    # class 0: positives at scores 0.9 and 0.3 (ranks 1 and 3) -> AP = (1 + 2/3) / 2; class 1: rank 1 -> AP = 1
    truth = [[1, 0], [0, 1], [1, 0]]
    scores = [[0.9, 0.1], [0.8, 0.7], [0.3, 0.2]]
    assert metrics.mean_average_precision(truth, scores) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2, abs=1e-15)
    # ties form one threshold: both samples retrieved together -> precision 1/2 at recall 1
    assert metrics.mean_average_precision([[1], [0]], [[0.5], [0.5]]) == 0.5


def test_mean_average_precision_equals_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth = (rng.random((200, 12)) < 0.2).astype(int)
    truth[0] = 1
    scores = np.round(rng.random((200, 12)), 2)  # rounding creates ties
    expected = sklearn_metrics.average_precision_score(truth, scores, average="macro")
    assert abs(metrics.mean_average_precision(truth, scores) - expected) < 1e-12


# --- SED, authors' protocol -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [50, 10])
def test_paper_protocol_matches_reference(ref, block):
    s = metrics.sed_scores(ref["sed_probs"], ref["sed_truth"], protocol="paper",
                           threshold=float(ref["sed_threshold"]), block_frames=block)
    assert abs(s.er - float(ref[f"sed_er_block{block}"])) < 1e-9
    assert abs(s.f1 - float(ref[f"sed_f1_block{block}"])) < 1e-9


def test_paper_protocol_list_input_equals_array_input(ref):
    a = metrics.sed_scores(ref["sed_probs"], ref["sed_truth"])
    b = metrics.sed_scores(list(ref["sed_probs"]), list(ref["sed_truth"]))
    c = metrics.sed_scores(ref["sed_probs"].reshape(-1, 14), ref["sed_truth"].reshape(-1, 14))
    assert a == b == c


def test_paper_protocol_off_by_one_and_floor_ceil():
    truth = np.zeros((100, 2))
    truth[10, 0] = 1
    # prediction active only in row 49, the last row of block 0: invisible to the block max over rows 0..48
    pred = np.zeros((100, 2), dtype=bool)
    pred[49, 1] = True
    s = metrics.sed_scores(pred, truth, block_frames=50)
    assert s.f1 == 0.0 and s.er == 1.0  # one deletion, no insertion seen
    pred[48, 1] = True  # now visible: block 0 has ref {0} and sys {1} -> one substitution
    assert metrics.sed_scores(pred, truth, block_frames=50).er == 1.0
    # 120 rows with block 50: ER uses floor -> 2 blocks, F1 uses ceil -> 3 blocks (the partial block counts)
    truth = np.zeros((120, 1))
    truth[105, 0] = 1
    pred = np.zeros((120, 1))
    pred[0, 0] = 1
    s = metrics.sed_scores(pred, truth, block_frames=50, threshold=0.5)
    # F1 blocks: ref in block 2, sys in block 0 -> TP 0; ER blocks 0..1: ref none -> Nref 0 -> inf (no eps)
    assert s.f1 == 0.0
    assert s.er == float("inf")
    pred[105, 0] = 1
    s = metrics.sed_scores(pred, truth, block_frames=50, threshold=0.5)
    p = 1 / (2 + 1e-8)
    r = 1 / (1 + 1e-8)
    assert s.f1 == pytest.approx(2 * p * r / (p + r + 1e-8), abs=1e-15)


def test_paper_protocol_threshold_is_strict():
    truth = np.zeros((50, 1))
    truth[0, 0] = 1
    assert metrics.sed_scores(np.full((50, 1), 0.3), truth, threshold=0.3).f1 == 0.0
    assert metrics.sed_scores(np.full((50, 1), 0.31), truth, threshold=0.3).f1 > 0.99


# --- SED, standard segment-based protocol -----------------------------------------------------------------------------


def test_segment_based_hand_computed():
    # dog 0.5-2.3 s -> segments 0,1,2; estimate 0.7-3.3 s -> segments 0..3: TP 3, one insertion
    s = metrics.segment_based_metrics([("a.wav", 0.5, 2.3, "dog")], [("a.wav", 0.7, 3.3, "dog")])
    assert s.er == pytest.approx(1 / 3, abs=1e-12)
    assert s.f1 == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1), abs=1e-15)
    # substitution: segment 0 has ref {dog} and sys {cat} -> S = 1, ER = 1, F1 = 0
    s = metrics.segment_based_metrics([("b.wav", 0.0, 0.5, "dog")], [("b.wav", 0.1, 0.6, "cat")])
    assert s.er == pytest.approx(1.0, abs=1e-12) and s.f1 == 0.0
    # evaluated length 1 s cuts the second segment of the estimate: no insertion left
    s = metrics.segment_based_metrics([("c.wav", 0.0, 1.0, "dog")], [("c.wav", 0.0, 2.0, "dog")],
                                      evaluated_length=1.0)
    assert s.er == pytest.approx(0.0, abs=1e-12) and s.f1 == 1.0


def test_segment_based_matches_stored_sed_eval(sed_eval_ref):
    labels = sed_eval_ref["labels"]
    n = 0
    for case in sed_eval_ref["cases"]:
        for setting in case["settings"]:
            s = metrics.segment_based_metrics(case["reference"], case["estimated"], labels=labels,
                                              time_resolution=setting["time_resolution"],
                                              evaluated_length=setting["evaluated_length"])
            for key in ("er", "f1", "precision", "recall"):
                assert abs(getattr(s, key) - setting["sed_eval"][key]) < 1e-12, (key, setting)
            n += 1
    assert n == 18


def _rolls_from_events(events, n_files, frames, hop):
    roll = np.zeros((n_files, frames, 14), dtype=np.int8)
    for name, onset, offset, label in events:
        roll[int(name[1:]), round(onset / hop): round(offset / hop), int(label)] = 1
    return roll


def test_segment_protocol_on_rolls_matches_stored_sed_eval(sed_eval_ref):
    case = sed_eval_ref["roll_case"]
    ref_roll = _rolls_from_events(case["reference"], 3, case["frames"], case["frame_hop"])
    est_roll = _rolls_from_events(case["estimated"], 3, case["frames"], case["frame_hop"])
    s = metrics.sed_scores(est_roll.astype(bool), ref_roll, protocol="segment", frame_hop=0.1, segment_length=1.0)
    assert abs(s.er - case["sed_eval"]["er"]) < 1e-12
    assert abs(s.f1 - case["sed_eval"]["f1"]) < 1e-12
    # roll_to_events inverts the roll construction
    events = [e for f in range(3) for e in metrics.roll_to_events(ref_roll[f], labels=[str(c) for c in range(14)],
                                                                   filename=f"r{f}")]
    assert sorted(map(tuple, case["reference"])) == sorted(events)


def test_segment_protocol_matches_live_sed_eval():
    import sed_eval  # in the test extra (with setuptools < 81 for its pkg_resources import): never skipped
    rng = np.random.default_rng(7)
    labels = ["a", "b", "c"]
    ref, est = [], []
    for f in range(4):
        for _ in range(5):
            onset = round(float(rng.uniform(0, 20)), 2)
            ref.append((f"f{f}", onset, round(onset + float(rng.uniform(0.1, 5)), 2), labels[rng.integers(3)]))
            onset = round(float(rng.uniform(0, 20)), 2)
            est.append((f"f{f}", onset, round(onset + float(rng.uniform(0.1, 5)), 2), labels[rng.integers(3)]))
    m = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=1.0)
    for f in range(4):
        as_dicts = [[{"filename": e[0], "onset": e[1], "offset": e[2], "event_label": e[3]} for e in lst if e[0] == f"f{f}"]
                    for lst in (ref, est)]
        m.evaluate(reference_event_list=as_dicts[0], estimated_event_list=as_dicts[1])
    res = m.results_overall_metrics()
    s = metrics.segment_based_metrics(ref, est, labels=labels)
    assert abs(s.er - res["error_rate"]["error_rate"]) < 1e-12
    assert abs(s.f1 - res["f_measure"]["f_measure"]) < 1e-12


def test_segment_protocol_uses_full_segment_unlike_paper():
    truth = np.zeros((600, 2))
    truth[9, 0] = 1  # last frame of the first 1 s segment; invisible to the paper's 9-row max with 10-row blocks
    pred = truth.copy()
    assert metrics.sed_scores(pred, truth, protocol="segment").f1 == 1.0
    assert metrics.sed_scores(pred, truth, protocol="paper", block_frames=10).f1 == 0.0


def test_sed_errors_are_clear():
    with pytest.raises(ValueError, match="protocol"):
        metrics.sed_scores(np.zeros((10, 2)), np.zeros((10, 2)), protocol="event")
    with pytest.raises(ValueError, match="differs from truth shape"):
        metrics.sed_scores(np.zeros((10, 2)), np.zeros((11, 2)))
    with pytest.raises(ValueError, match="whole number of frames"):
        metrics.sed_scores(np.zeros((10, 2)), np.zeros((10, 2)), protocol="segment", segment_length=0.25)
    with pytest.raises(ValueError, match="not in `labels`"):
        metrics.segment_based_metrics([("a", 0, 1, "x")], [], labels=["y"])


# --- ASC ---------------------------------------------------------------------------------------------------------------


def test_asc_accuracy_averages_softmax_not_votes():
    # file 0: two crops weakly favour class 1, one crop strongly favours class 0
    # mean softmax -> class 0 (a majority vote would say class 1); file 1: all crops class 1
    logits = np.array([[0.0, 0.2], [0.0, 0.2], [5.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert metrics.asc_accuracy(logits, [0, 1]) == 100.0
    assert metrics.asc_accuracy(logits.reshape(2, 3, 2), [1, 1]) == 50.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert metrics.asc_accuracy(probs, [0, 1], from_logits=False) == 100.0
    with pytest.raises(ValueError, match="multiple of n_crops"):
        metrics.asc_accuracy(logits[:5], [0, 1])


def test_macro_f1_hand_computed():
    # class 0: F1 1; class 1: TP 1 FP 1 -> 2/3; class 2: TP 1 FN 1 -> 2/3
    assert metrics.macro_f1([0, 1, 1, 2], [0, 1, 2, 2]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3, abs=1e-15)
    assert metrics.macro_f1(np.eye(3)[[0, 1, 1, 2]], [0, 1, 2, 2], n_classes=4) == pytest.approx(
        (1 + 2 / 3 + 2 / 3 + 0) / 4, abs=1e-15
    )


def test_metrics_module_does_not_import_torch():
    code = "import sys, dcasenet_hub.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
