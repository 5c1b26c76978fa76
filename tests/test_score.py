"""``metrics.score`` and ``dcasenet-hub score``: the numbers equal the reference libraries' (sed_eval, scikit-learn,
sed_scores_eval) on the same inputs, every annotation format reads to the same events, and unknown labels and files
present on one side only are reported, never dropped silently."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from dcasenet_hub import labels as L
from dcasenet_hub import metrics
from dcasenet_hub.errors import AnnotationError, UnknownLabelError
from dcasenet_hub.inference.outputs import Prediction, detect_events
from dcasenet_hub.metrics.annotations import read_annotations

EVENT_CLASSES = ["alarm", "baby", "dog", "engine"]  # the annotated subset of L.EVENTS


def _truth_events(rng: np.random.Generator, n_files: int = 6, duration: float = 10.0) -> dict[str, list]:
    """Reference events per file: overlapping events of one class (f0), a file without events (f1), others random."""
    out: dict[str, list] = {}
    for f in range(n_files):
        events = []
        if f == 0:
            events = [(1.0, 4.0, "dog"), (3.0, 6.0, "dog"), (2.0, 2.5, "baby")]  # two dogs overlap
        elif f != 1:
            for _ in range(int(rng.integers(2, 6))):
                onset = round(float(rng.uniform(0, duration - 1.5)), 2)
                events.append((onset, round(min(duration, onset + float(rng.uniform(0.3, 3.0))), 2),
                               EVENT_CLASSES[int(rng.integers(len(EVENT_CLASSES)))]))
        out[f"rec{f}"] = events
    return out


def _prediction(name: str, events: list, rng: np.random.Generator, *, duration: float = 10.0,
                threshold: float = 0.5) -> Prediction:
    """A Prediction whose scores follow the events loosely (so the metrics are neither 0 nor 1)."""
    n = round(duration / 0.1) - 4  # frames end 0.4 s before the end, as the network's
    times = (np.arange(n) * 0.1).astype(np.float32)
    roll = np.zeros((n, len(L.EVENTS)))
    for onset, offset, label in events:
        roll[int(onset * 10): math.ceil(offset * 10), L.EVENTS.index(label)] = 1
    noise = np.repeat(rng.uniform(0, 0.7, (n // 8 + 1, len(L.EVENTS))), 8, axis=0)[:n]  # 0.8 s steps, as the network
    probs = np.clip(0.35 * roll + noise, 0, 1).astype(np.float32)
    scene = rng.dirichlet(np.ones(len(L.SCENES))).astype(np.float32)
    tags = rng.uniform(0, 1, len(L.TAGS)).astype(np.float32)
    return Prediction(scene_probs=scene, tag_probs=tags, event_probs=probs, event_times=times,
                      events=detect_events(probs, L.EVENTS, hop_s=0.1, threshold=threshold, duration_s=duration),
                      scene_labels=L.SCENES, tag_labels=L.TAGS, event_labels=L.EVENTS, threshold=threshold,
                      duration_s=duration, source=f"in/{name}.wav")


def _write_folder(folder, predictions):
    """The files ``predict`` writes per input (same writers)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in predictions:
        stem = folder / p.source.split("/")[-1][: -len(".wav")]
        p.save(stem.with_suffix(".json"), meta={"task": "predict"})
        p.save_events(stem.with_name(stem.name + ".events.csv"))
        p.save_scores(stem.with_name(stem.name + ".scores.tsv"))


def _dcase_tsv(path, truth: dict[str, list]) -> None:
    lines = ["filename\tonset\toffset\tevent_label"]
    for name, events in truth.items():
        if not events:
            lines.append(f"{name}.wav\t\t\t")  # DESED: a file without events
        lines += [f"{name}.wav\t{a}\t{b}\t{c}" for a, b, c in events]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def event_case(tmp_path):
    rng = np.random.default_rng(3)
    truth = _truth_events(rng)
    preds = [_prediction(name, events, rng) for name, events in truth.items()]
    _write_folder(tmp_path / "pred", preds)
    _dcase_tsv(tmp_path / "truth.tsv", truth)
    return tmp_path, truth, preds


def _sed_eval_dicts(events, name):
    return [{"filename": name, "onset": a, "offset": b, "event_label": c} for a, b, c in events]


# --- event metrics equal sed_eval ------------------------------------------------------------------------------


def test_event_based_f1_equals_sed_eval_with_overlaps_and_empty_files():
    import sed_eval  # the test extra: never skipped

    rng = np.random.default_rng(11)
    labels = ["a", "b", "c"]
    ref, est = {}, {}
    for f in range(8):
        ref[f"f{f}"] = [] if f == 2 else [
            (on := round(float(rng.uniform(0, 20)), 2), round(on + float(rng.uniform(0.1, 4)), 2),
             labels[int(rng.integers(3))]) for _ in range(int(rng.integers(1, 9)))]
        # estimates near the references (some within the collar), plus random ones; f3 has no estimate
        est[f"f{f}"] = [] if f == 3 else [
            (round(max(0.0, a + float(rng.normal(0, 0.15))), 3), round(b + float(rng.normal(0, 0.3)), 3),
             c if rng.uniform() < 0.8 else labels[int(rng.integers(3))]) for a, b, c in ref[f"f{f}"]
        ] + [(on := round(float(rng.uniform(0, 20)), 2), round(on + 1.0, 2), labels[int(rng.integers(3))])]
    ref["f0"] += [(1.0, 5.0, "a"), (2.0, 3.0, "a")]  # overlapping events of one class
    est["f0"] += [(1.1, 5.1, "a"), (2.05, 3.1, "a")]
    est["only_estimated"] = [(0.0, 1.0, "b")]
    m = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, t_collar=0.2, percentage_of_length=0.2,
                                               empty_system_output_handling="zero_score")
    for name in sorted(set(ref) | set(est)):
        m.evaluate(reference_event_list=_sed_eval_dicts(ref.get(name, []), name),
                   estimated_event_list=_sed_eval_dicts(est.get(name, []), name))
    flat_ref = [(k, *e) for k, evs in ref.items() for e in evs]
    flat_est = [(k, *e) for k, evs in est.items() for e in evs]
    ours = metrics.event_based_metrics(flat_ref, flat_est, labels=labels)
    overall = m.results_overall_metrics()["f_measure"]
    assert 0.2 < ours.f1 < 0.95  # a fixture where matching matters
    assert abs(ours.f1 - overall["f_measure"]) < 1e-12
    assert abs(ours.precision - overall["precision"]) < 1e-12
    assert abs(ours.recall - overall["recall"]) < 1e-12
    class_wise = m.results_class_wise_metrics()
    for label in labels:
        assert abs(ours.class_f1[label] - class_wise[label]["f_measure"]["f_measure"]) < 1e-12
    assert abs(ours.macro_f1 - m.results_class_wise_average_metrics()["f_measure"]["f_measure"]) < 1e-12


def test_event_matching_is_maximal_not_greedy():
    # greedy matching takes est 0 for ref 0 and leaves ref 1 unmatched; the optimal (sed_eval default) matches both
    ref = [("x", 1.0, 2.0, "a"), ("x", 1.25, 2.1, "a")]
    est = [("x", 1.1, 2.05, "a"), ("x", 0.95, 1.9, "a")]
    assert metrics.event_based_metrics(ref, est).f1 == 1.0


def test_segment_class_f1_equals_sed_eval(event_case):
    import sed_eval

    _, truth, preds = event_case
    m = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=EVENT_CLASSES, time_resolution=1.0)
    for p in preds:
        name = p.source.split("/")[-1][:-4]
        m.evaluate(reference_event_list=_sed_eval_dicts(truth[name], name),
                   estimated_event_list=_sed_eval_dicts([e for e in p.events if e[2] in EVENT_CLASSES], name),
                   evaluated_length_seconds=p.duration_s)
    report = metrics.score(preds, _annotations(truth))
    seg = report.metrics["segment_based"]
    overall = m.results_overall_metrics()
    assert abs(seg["f1"] - overall["f_measure"]["f_measure"]) < 1e-12
    assert abs(seg["er"] - overall["error_rate"]["error_rate"]) < 1e-12
    for label in EVENT_CLASSES:
        assert abs(seg["class_f1"][label] - m.results_class_wise_metrics()[label]["f_measure"]["f_measure"]) < 1e-12


def _annotations(truth):
    return metrics.Annotations(kind="events", events={k: list(v) for k, v in truth.items()},
                               names={k: k + ".wav" for k in truth}, source="<test>")


# --- PSDS equals sed_scores_eval on the files predict writes --------------------------------------------------------


def test_psds_equals_sed_scores_eval_on_the_written_files(event_case, tmp_path):
    import sed_scores_eval as sse  # the `score` extra, in the test extra: never skipped
    folder, truth, preds = event_case
    report = metrics.score(folder / "pred", folder / "truth.tsv")
    assert report.task == "events" and report.files["scored"] == 6
    # the reference: sed_scores_eval's own readers on the files (scores.tsv as predict wrote them)
    scores = {}
    for p in preds:
        name = p.source.split("/")[-1][:-4]
        frame = sse.io.read_sed_scores(folder / "pred" / f"{name}.scores.tsv")
        scores[name] = frame[["onset", "offset", *EVENT_CLASSES]]
    merged = {k: [list(e) for e in metrics.psds.merge_overlaps(v)] for k, v in truth.items()}
    durations = {p.source.split("/")[-1][:-4]: p.duration_s for p in preds}
    for name, params in metrics.PSDS_SCENARIOS.items():
        value, class_values, _, _ = sse.intersection_based.psds(scores=scores, ground_truth=merged,
                                                                audio_durations=durations, **params)
        got = report.metrics["psds"][name]
        assert 0.0 < value < 1.0
        assert abs(got["value"] - value) < 1e-12
        for label in EVENT_CLASSES:
            assert abs(got["class_values"][label] - class_values[label]) < 1e-12
    # sed_scores_eval refuses overlapping events of one class (the two dogs of rec0): score merges them and says so
    with pytest.raises(AssertionError, match="overlapping"):
        sse.io.parse_ground_truth({k: [list(e) for e in v] for k, v in truth.items()})
    assert report.metrics["psds_merged_overlaps"] >= 1
    json.loads(report.save(tmp_path / "report.json").read_text())  # standard JSON


def test_psds_missing_library_is_one_line_and_the_rest_is_scored(event_case, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_sse(name, *args, **kwargs):
        if name.startswith("sed_scores_eval"):
            raise ImportError("No module named 'sed_scores_eval'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sse)
    folder, _, _ = event_case
    report = metrics.score(folder / "pred", folder / "truth.tsv")
    assert report.metrics["psds"]["error"].startswith("PSDS needs sed_scores_eval")
    assert "dcasenet-hub[score]" in report.metrics["psds"]["error"]
    assert report.metrics["event_based"]["f1"] > 0
    assert "PSDS needs sed_scores_eval" in report.table()


# --- tags and scenes equal scikit-learn ---------------------------------------------------------------------------


def test_tag_metrics_equal_sklearn(tmp_path):
    import sklearn.metrics as sk  # the test extra
    rng = np.random.default_rng(5)
    chosen = ["Bark", "Meow", "Knock", "Walk_and_footsteps", "Crowd"]
    preds, rows = [], []
    for f in range(30):
        positives = [t for t in chosen if rng.uniform() < 0.35]
        p = _prediction(f"clip{f}", [], rng, threshold=0.4)
        for t in positives:
            p.tag_probs[L.TAGS.index(t)] = min(1.0, p.tag_probs[L.TAGS.index(t)] + 0.3)
        preds.append(p)
        rows.append(f"clip{f}.wav," + ",".join(positives) if positives else f"clip{f}.wav")
    rows[3] = f'clip3.wav,"{chosen[0]},{chosen[1]}"'  # several labels in one quoted cell
    (tmp_path / "tags.csv").write_text("filename,labels\n" + "\n".join(rows) + "\n")
    _write_folder(tmp_path / "pred", preds)
    ann = read_annotations(tmp_path / "tags.csv")
    report = metrics.score(tmp_path / "pred", tmp_path / "tags.csv")
    assert report.task == "tags"
    used = [t for t in L.TAGS if t in set(ann.label_set())]
    assert report.labels == used
    y = np.array([[t in ann.labels[f"clip{f}"] for t in used] for f in range(30)], dtype=int)
    # the folder's .json holds probabilities rounded to 6 decimals: score what the files say
    s = np.array([[json.loads((tmp_path / "pred" / f"clip{f}.json").read_text())["tags"]["probs"][t] for t in used]
                  for f in range(30)])
    ap = sk.average_precision_score(y, s, average=None)
    for t, v in zip(used, ap):
        assert abs(report.metrics["ap"][t] - v) < 1e-12
    assert abs(report.metrics["map"] - sk.average_precision_score(y, s, average="macro")) < 1e-12
    weights = y.sum(axis=1)
    keep = weights > 0
    lwlrap = sk.label_ranking_average_precision_score(y[keep], s[keep], sample_weight=weights[keep])
    assert abs(report.metrics["lwlrap"] - lwlrap) < 1e-12
    assert report.metrics["threshold"] == 0.4
    decided = (s > 0.4).astype(int)
    assert abs(report.metrics["f1_micro"] - sk.f1_score(y, decided, average="micro", zero_division=0)) < 1e-12
    assert abs(report.metrics["f1_macro"] - sk.f1_score(y, decided, average="macro", zero_division=0)) < 1e-12
    for t, v in zip(used, sk.f1_score(y, decided, average=None, zero_division=0)):
        assert abs(report.metrics["f1"][t] - v) < 1e-12
    precision, recall, _ = sk.precision_recall_curve(y[:, 0], s[:, 0])
    ours_p, ours_r = report.curves["pr"][used[0]]
    np.testing.assert_allclose(ours_p, precision[:-1][::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours_r, recall[:-1][::-1], rtol=0, atol=1e-12)


def test_scene_metrics_equal_sklearn(tmp_path):
    import sklearn.metrics as sk  # the test extra
    rng = np.random.default_rng(9)
    preds, rows, true = [], ["filename\tscene_label"], []
    for f in range(40):
        p = _prediction(f"s{f}", [], rng)
        label = L.SCENES[int(rng.integers(0, 6))]
        if rng.uniform() < 0.6:
            p.scene_probs[L.SCENES.index(label)] += 1.0
        preds.append(p)
        rows.append(f"s{f}.wav\t{label}")
        true.append(label)
    (tmp_path / "scenes.tsv").write_text("\n".join(rows) + "\n")
    report = metrics.score(preds, tmp_path / "scenes.tsv")
    assert report.task == "scenes"
    pred = [p.top_scene for p in preds]
    assert abs(report.metrics["accuracy"] - sk.accuracy_score(true, pred)) < 1e-12
    assert abs(report.metrics["macro_f1"] - sk.f1_score(true, pred, average="macro")) < 1e-12
    for label, r in zip(sorted(set(true)), sk.recall_score(true, pred, average=None, labels=sorted(set(true)))):
        assert abs(report.metrics["recall"][label] - r) < 1e-12
    order = report.metrics["confusion"]["labels"]
    assert report.metrics["confusion"]["matrix"] == sk.confusion_matrix(true, pred, labels=order).tolist()
    assert 0.3 < report.metrics["accuracy"] < 0.95


# --- annotation formats --------------------------------------------------------------------------------------------


RAVEN = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
         "1\tWaveform 1\t1\t1.000\t4.000\t0.0\t12000.0\tdog\n"
         "1\tSpectrogram 1\t1\t1.000\t4.000\t0.0\t12000.0\tdog\n"
         "2\tSpectrogram 1\t1\t3.000\t6.000\t100.0\t8000.0\tdog\n"
         "3\tSpectrogram 1\t1\t2.000\t2.500\t100.0\t8000.0\tbaby\n")
AUDACITY = "1.000000\t4.000000\tdog\n\\\t0.000000\t12000.000000\n3.000000\t6.000000\tdog\n2.000000\t2.500000\tbaby\n"


def test_every_event_format_reads_to_the_same_events(tmp_path):
    expected = sorted([(1.0, 4.0, "dog"), (3.0, 6.0, "dog"), (2.0, 2.5, "baby")])
    (tmp_path / "rec0.Table.1.selections.txt").write_text(RAVEN)
    (tmp_path / "aud").mkdir()
    (tmp_path / "aud" / "rec0.txt").write_text(AUDACITY)
    (tmp_path / "a.tsv").write_text("filename\tonset\toffset\tevent_label\nrec0.wav\t1.0\t4.0\tdog\n"
                                    "rec0.wav\t3.0\t6.0\tdog\nrec0.wav\t2.0\t2.5\tbaby\nrec1.wav\t\t\t\n")
    (tmp_path / "b.csv").write_text("rec0.wav,1.0,4.0,dog\nrec0.wav,3.0,6.0,dog\nrec0.wav,2.0,2.5,baby\n")
    raven = read_annotations(tmp_path / "rec0.Table.1.selections.txt")
    audacity = read_annotations(tmp_path / "aud")
    dcase = read_annotations(tmp_path / "a.tsv")
    headerless = read_annotations(tmp_path / "b.csv")
    assert (raven.format, audacity.format, dcase.format, headerless.format) == ("raven", "audacity", "dcase", "dcase")
    for ann in (raven, audacity, dcase, headerless):
        assert sorted(ann.events["rec0"]) == expected, ann.format
    assert dcase.events["rec1"] == []  # annotated, no events: scored (not missing)


def test_raven_tables_over_several_files_use_begin_file_and_file_offset(tmp_path):
    table = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tSpecies\n"
             "1\tSpectrogram 1\t1\t12.5\t13.0\tb.wav\t2.5\tdog\n")
    (tmp_path / "t.txt").write_text(table)
    assert read_annotations(tmp_path / "t.txt").events == {"b": [(2.5, 3.0, "dog")]}


def test_bad_annotation_rows_are_all_listed_with_their_lines(tmp_path):
    (tmp_path / "t.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t2\t1\tdog\n"
                                    "a.wav\tx\t3\tdog\nb.wav\t1\t2\t\n")
    with pytest.raises(AnnotationError) as err:
        read_annotations(tmp_path / "t.tsv")
    text = str(err.value)
    assert "3 problem(s)" in text and "line 2" in text and "line 3" in text and "line 4" in text


# --- labels and files -------------------------------------------------------------------------------------------


def test_unknown_labels_are_listed_with_the_models_and_a_mapping_fixes_them(event_case, tmp_path):
    folder, _, _ = event_case
    text = (folder / "truth.tsv").read_text().replace("\tdog\n", "\tDog barking\n").replace("\tbaby\n", "\tinfant\n")
    (tmp_path / "renamed.tsv").write_text(text)
    with pytest.raises(UnknownLabelError) as err:
        metrics.score(folder / "pred", tmp_path / "renamed.tsv", psds=False)
    message = str(err.value)
    assert "Dog barking, infant" in message and "female_scream" in message and "--map YOURS=MODEL" in message
    mapped = metrics.score(folder / "pred", tmp_path / "renamed.tsv", psds=False,
                           label_map={"Dog barking": "dog", "infant": "baby"})
    plain = metrics.score(folder / "pred", folder / "truth.tsv", psds=False)
    assert mapped.metrics == plain.metrics
    dropped = metrics.score(folder / "pred", tmp_path / "renamed.tsv", psds=False,
                            label_map={"Dog barking": None, "infant": "baby"})
    assert "dog" not in dropped.labels and dropped.metrics["event_based"]["class_f1"].keys() == set(dropped.labels)


def test_files_on_one_side_only_are_listed_not_scored(event_case, tmp_path):
    folder, truth, _ = event_case
    text = (folder / "truth.tsv").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("rec5.wav")]
    lines.append("unseen.wav\t1.0\t2.0\tdog")
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    report = metrics.score(folder / "pred", tmp_path / "t.tsv", psds=False)
    assert report.files["no_prediction"] == ["unseen.wav"]
    assert report.files["no_annotation"] == ["in/rec5.wav"]
    assert report.files["scored"] == 5
    assert "unseen.wav" in report.table() and "in/rec5.wav" in report.table()
    del truth["rec5"]
    subset = metrics.score([p for p in event_case[2] if "rec5" not in p.source], _annotations(truth), psds=False)
    assert subset.metrics["segment_based"] == report.metrics["segment_based"]


def test_no_common_file_says_how_names_are_matched(event_case, tmp_path):
    folder, _, _ = event_case
    (tmp_path / "t.tsv").write_text("filename\tonset\toffset\tevent_label\nother.wav\t1\t2\tdog\n")
    with pytest.raises(AnnotationError, match="matched without their extension") as e:
        metrics.score(folder / "pred", tmp_path / "t.tsv")
    assert str(e.value).startswith(f"{tmp_path / 't.tsv'}: no annotated file has a prediction in {folder / 'pred'}")


@pytest.mark.parametrize("text, said", [
    ("filename;onset;offset;event_label\nrec2.wav;0.5;1.5;dog\n", "columns separated by ';'; separate them with tabs"),
    ("rec2.wav 0.5 1.5 dog\n", "columns separated by spaces; separate them with tabs"),
    ("filename\tonset\toffset\tevent_label\n", "names no file (a header without rows?)")])
def test_annotations_in_a_form_that_cannot_be_read_say_so_naming_the_file(event_case, tmp_path, text, said):
    """Broken variants caught: a ';' or space separated table was read as a one-column label table ("no annotated
    file has a prediction: the annotations name e.g. ['filename;onset;...']"), and a header without rows gave the
    same message with an empty list, neither naming the annotation file or the fix."""
    folder, _, _ = event_case
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(AnnotationError) as e:
        metrics.score(folder / "pred", tmp_path / "t.txt")
    assert str(e.value).startswith(f"{tmp_path / 't.txt'}: {said}") and "\n" not in str(e.value)


def test_an_audacity_track_with_a_header_line_reads_as_a_track(tmp_path):
    """Broken variant caught: 'start<TAB>end<TAB>label' as first line made the track a tag table (its words and
    numbers "labels the model does not know")."""
    (tmp_path / "a.labels.txt").write_text("start\tend\tlabel\n0.5\t1.5\talarm\n2\t3\tdog\n")
    ann = metrics.read_annotations(tmp_path / "a.labels.txt")
    assert ann.kind == "events" and ann.events == {"a": [(0.5, 1.5, "alarm"), (2.0, 3.0, "dog")]}


def test_a_report_prints_in_one_short_line(event_case):
    """Broken variant caught: the dataclass repr printed every metric of every class (800-1500 characters)."""
    folder, _, _ = event_case
    report = metrics.score(folder / "pred", folder / "truth.tsv", psds=False)
    text = repr(report)
    assert text.startswith("ScoreReport(events: 6 file(s) scored, ") and "segment-based (1 s): F1 " in text
    assert "\n" not in text and len(text) < 160, text


# --- command line ---------------------------------------------------------------------------------------------


def test_cli_score_prints_a_table_and_writes_report_json(event_case, capsys):
    from dcasenet_hub.cli import main

    folder, _, _ = event_case
    out = folder / "report.json"
    assert main(["score", str(folder / "pred"), "--truth", str(folder / "truth.tsv"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "segment-based (1 s): F1" in printed and "event-based (collar 0.2 s)" in printed
    saved = json.loads(out.read_text())
    api = metrics.score(folder / "pred", folder / "truth.tsv").to_dict()
    assert saved["metrics"] == api["metrics"]
    assert out.with_suffix(".png").stat().st_size > 10_000  # the PSD-ROC curves (matplotlib is in the test extra)
    quiet = folder / "quiet.json"
    assert main(["score", str(folder / "pred"), "--truth", str(folder / "truth.tsv"), "-o", str(quiet), "--no-plot",
                 "-q"]) == 0
    assert capsys.readouterr().out == "" and json.loads(quiet.read_text())["metrics"] == saved["metrics"]


def test_cli_score_says_what_a_missing_sed_scores_eval_leaves_out(event_case, monkeypatch, capsys):
    """Without sed_scores_eval, one log line names what was left out (PSDS and its plot) and the extra that adds
    them; -q hides it with the other information.

    Broken variant caught: the events report had no plot and the command said nothing about it on stderr.
    """
    from dcasenet_hub.cli import main

    monkeypatch.setitem(sys.modules, "sed_scores_eval", None)  # import fails, as when it is not installed
    folder, _, _ = event_case
    out = folder / "report.json"
    assert main(["score", str(folder / "pred"), "--truth", str(folder / "truth.tsv"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "sed_scores_eval is not installed" in line]
    assert len(said) == 1, err
    assert "PSDS and its PSD-ROC plot" in said[0] and str(out.with_suffix(".png")) in said[0], said[0]
    assert 'pip install "dcasenet-hub[score]"' in said[0], said[0]
    assert not out.with_suffix(".png").exists()
    assert main(["score", str(folder / "pred"), "--truth", str(folder / "truth.tsv"), "-o", str(out), "-q"]) == 0
    assert "sed_scores_eval" not in capsys.readouterr().err


def test_plot_report_draws_every_task(event_case, tmp_path):
    from dcasenet_hub.integrations.plot import plot_report

    folder, _, preds = event_case
    (tmp_path / "scenes.csv").write_text("".join(f"rec{i}.wav,{L.SCENES[i % 3]}\n" for i in range(6)))
    (tmp_path / "tags.csv").write_text("".join(f"rec{i}.wav,Bark{',Meow' * (i % 2)}\n" for i in range(6)))
    for truth, axes_expected in (("scenes.csv", 1), ("tags.csv", 1)):
        report = metrics.score(preds, tmp_path / truth)
        fig = plot_report(report, output=tmp_path / f"{truth}.png")
        assert len(fig.axes) == axes_expected and (tmp_path / f"{truth}.png").stat().st_size > 5_000
    events = plot_report(metrics.score(preds, folder / "truth.tsv"))
    assert len(events.axes) == 2  # one per PSDS scenario
    with pytest.raises(ValueError, match="no PSD-ROC curves"):
        plot_report(metrics.score(preds, folder / "truth.tsv", psds=False))


def test_cli_score_bad_map_and_unknown_labels_are_one_line(event_case, tmp_path, capsys):
    from dcasenet_hub.cli import main

    folder, _, _ = event_case
    (tmp_path / "t.tsv").write_text("filename\tonset\toffset\tevent_label\nrec0.wav\t1\t2\tcow\n")
    assert main(["score", str(folder / "pred"), "--truth", str(tmp_path / "t.tsv")]) == 2
    err = capsys.readouterr().err
    assert "cow" in err and "Traceback" not in err
    assert main(["score", str(folder / "pred"), "--truth", str(tmp_path / "t.tsv"), "--map", "cow=dog",
                 "--no-psds"]) == 0
    assert main(["score", str(folder / "pred"), "--truth", str(tmp_path / "t.tsv"), "--map", "cow"]) == 2
    assert "--map" in capsys.readouterr().err
    (tmp_path / "empty.tsv").write_text("")
    assert main(["score", str(folder / "pred"), "--truth", str(tmp_path / "empty.tsv")]) == 2
    assert capsys.readouterr().err.strip() == (f"dcasenet-hub score: error: {tmp_path / 'empty.tsv'}: is empty; give "
                                               "the file with your annotations (docs/evaluation.md shows the formats)")


def test_score_refuses_bad_values_and_late_events_in_one_line_and_scores_annotations_without_events(
        event_case, tmp_path, capsys):
    """Option values out of range are refused naming the flag (exit 2); an event that ends after its file (times in
    ms, another recording's annotation) names the file and the event; annotations of files without any event (the
    DESED form) are scored, with PSDS reported as not computable.

    Broken variants caught: --segment-length 0 was a ZeroDivisionError (exit 4), --threshold 2 and --collar -1 were
    scored; an offset of 1e12 s allocated terabytes (MemoryError, exit 4) and times in ms were scored; annotations
    with no event made sed_scores_eval raise (exit 2 with its own message) unless --no-psds.
    """
    from dcasenet_hub.cli import main
    from dcasenet_hub.metrics import score

    folder, _, _ = event_case
    pred, truth = str(folder / "pred"), str(folder / "truth.tsv")
    for flags, message in ((["--segment-length", "0"], "--segment-length 0.0: must be a number of seconds >= 0.1 "
                                                       "(the 100 ms event grid)"),
                           (["--segment-length", "1e-9"], "--segment-length 1e-09: must be a number of seconds >= "
                                                          "0.1 (the 100 ms event grid)"),
                           (["--threshold", "2"], "--threshold 2.0: must be a probability between 0 and 1"),
                           (["--collar", "-1"], "--collar -1.0: must be a number of seconds >= 0"),
                           (["--threshold", "nan"], "--threshold nan: must be a probability between 0 and 1")):
        assert main(["score", pred, "--truth", truth, "--no-plot", *flags]) == 2, flags
        assert capsys.readouterr().err.strip() == f"dcasenet-hub score: error: {message}"
    with pytest.raises(ValueError, match="percentage_of_length=-0.1: must be a fraction >= 0"):
        score(pred, truth, percentage_of_length=-0.1)
    for times in ("0.5\t1e12", "500\t1500"):
        late = tmp_path / "late.tsv"
        late.write_text(f"filename\tonset\toffset\tevent_label\nrec2.wav\t{times}\tdog\n")
        assert main(["score", pred, "--truth", str(late), "--no-plot"]) == 2
        err = capsys.readouterr().err
        assert f"{late}: rec2.wav: event 'dog' " in err and "ends after the file (10.000 s)" in err
        assert len(err.strip().splitlines()) == 1
    # within the 1 s of slack: clipped to the file and scored, PSDS too (sed_scores_eval failed on such events)
    slack = tmp_path / "slack.tsv"
    slack.write_text("filename\tonset\toffset\tevent_label\nrec2.wav\t9.5\t10.6\tdog\nrec3.wav\t2\t3\tdog\n")
    report = score(pred, slack)
    assert report.metrics["reference_events"] == {"dog": 2} and "error" not in report.metrics["psds"]
    none = tmp_path / "none.tsv"
    none.write_text("filename\tonset\toffset\tevent_label\nrec0.wav\t\t\t\nrec1.wav\t\t\t\n")
    report = score(pred, none, labels=["dog"])
    assert report.metrics["reference_events"] == {"dog": 0}
    assert report.metrics["psds"]["error"].startswith("no annotated event of dog: PSDS needs")
    report = score(pred, none)
    assert report.labels == [] and "no event class to score" in report.metrics["psds"]["error"]
    assert main(["score", pred, "--truth", str(none), "--no-plot", "--labels", "dog,baby"]) == 0
    assert main(["score", pred, "--truth", str(none), "--no-plot", "--labels", "dog", "baby"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):  # names no class: not "every class"
        main(["score", pred, "--truth", str(none), "--no-plot", "--labels", ","])
    assert "--labels ,: give at least one class name" in capsys.readouterr().err


# --- predict writes what sed_scores_eval reads ------------------------------------------------------------------


def test_predict_writes_durations_scores_and_event_files_that_round_trip(tmp_path, authors_checkpoint):
    import sed_scores_eval as sse
    import soundfile as sf

    from dcasenet_hub.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    sf.write(tmp_path / "in" / "a.wav", 0.1 * rng.standard_normal(2 * 16000), 16000)
    sf.write(tmp_path / "in" / "sub" / "b.flac", 0.1 * rng.standard_normal(int(3.3 * 24000)), 24000)
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(authors_checkpoint), "-q",
                 "--threshold", "0.1", "--event-format", "dcase", "--event-format", "raven",
                 "--event-format", "audacity"]) == 0
    durations = sse.io.read_audio_durations(out / "durations.tsv")
    assert durations == {"a": 2.0, "sub/b": 3.3}
    scores = {key: sse.io.read_sed_scores(out / f"{key}.scores.tsv") for key in durations}  # validates the layout
    for key, frame in scores.items():
        assert list(frame.columns) == ["onset", "offset", *L.EVENTS]
        assert frame["offset"].iloc[-1] <= durations[key]
    (tmp_path / "truth.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t0.2\t1.0\tdog\n"
                                        "sub/b.flac\t1.0\t2.5\tfootsteps\n")
    truth = sse.io.read_ground_truth_events(tmp_path / "truth.tsv")
    report = metrics.score(out, tmp_path / "truth.tsv")
    assert report.files == {"scored": 2, "no_prediction": [], "no_annotation": []}
    classes = ["dog", "footsteps"]
    value = sse.intersection_based.psds(scores={k: f[["onset", "offset", *classes]] for k, f in scores.items()},
                                        ground_truth=truth, audio_durations=durations,
                                        **metrics.PSDS_SCENARIOS["scenario2"])[0]
    assert abs(report.metrics["psds"]["scenario2"]["value"] - value) < 1e-12
    # every event format reads back to the .json's events, per file and merged
    listed = {key: sorted((e["onset"], e["offset"], e["event_label"])
                          for e in json.loads((out / f"{key}.json").read_text())["events"]["list"])
              for key in durations}
    assert sum(map(len, listed.values())) >= 3  # a fixture with events to compare
    header = (out / "a.Table.1.selections.txt").read_text().splitlines()[0].split("\t")
    assert header == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                      "High Freq (Hz)", "Annotation"]
    for key in durations:
        for suffix, fmt in ((".events.csv", "dcase"), (".Table.1.selections.txt", "raven"), (".labels.txt", "audacity")):
            ann = read_annotations(out / f"{key}{suffix}")
            assert ann.format == fmt
            got = next(iter(ann.events.values())) if ann.events else []
            assert sorted(got) == listed[key], (key, fmt)
            assert fmt == "dcase" or list(ann.events) == [key.split("/")[-1]]
    merged = read_annotations(out / "events.selections.txt")
    assert {k: sorted(v) for k, v in merged.events.items()} == {k: v for k, v in listed.items() if v}
    assert {k: sorted(v) for k, v in read_annotations(out / "events.csv").events.items()} == \
        {k: v for k, v in listed.items() if v}
    # predictions scored against their own Raven export: everything matches
    raven_truth = tmp_path / "raven"
    for key in durations:
        (raven_truth / key).parent.mkdir(parents=True, exist_ok=True)
        (raven_truth / f"{key}.Table.1.selections.txt").write_bytes((out / f"{key}.Table.1.selections.txt").read_bytes())
    own = metrics.score(out, raven_truth, psds=False)
    assert own.files["scored"] == 2
    assert own.metrics["event_based"]["f1"] == 1.0 and own.metrics["segment_based"]["f1"] == 1.0


def test_event_formats_are_checked_when_the_options_are_built():
    from dcasenet_hub.batch import BatchOptions

    assert BatchOptions(task="predict", event_formats="raven, dcase").event_formats == ("raven", "dcase")
    with pytest.raises(ValueError, match="event_formats"):
        BatchOptions(task="predict", event_formats=("dcase", "xml"))
    with pytest.raises(ValueError, match=r"event_formats=\(\): must be one or more of"):
        BatchOptions(task="predict", event_formats=())


def test_a_file_name_with_a_tab_round_trips_through_the_tab_separated_files(tmp_path, authors_checkpoint):
    """durations.tsv and the Raven tables quote a name holding a tab (csv style, which pandas and the csv module
    undo), so sed_scores_eval and ``score --truth events.selections.txt`` find the file again.

    Broken variant caught: the name was written as it is, its tab splitting the row: durations.tsv gave the id
    ``x`` and ``score`` listed the file under both no_prediction and no_annotation.
    """
    import sed_scores_eval as sse
    import soundfile as sf

    from dcasenet_hub.cli import main

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "in" / "x\ty.wav", 0.1 * rng.standard_normal(3 * 16000), 16000)
    sf.write(tmp_path / "in" / "z.wav", 0.1 * rng.standard_normal(3 * 16000), 16000)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--model", str(authors_checkpoint), "-q",
                 "--threshold", "0.2", "--event-format", "dcase", "--event-format", "raven"]) == 0
    assert sorted(sse.io.read_audio_durations(out / "durations.tsv")) == ["x\ty", "z"]
    listed = json.loads((out / "x\ty.json").read_text())["events"]["list"]
    assert listed  # events of the tab-named file are in the merged table
    report = metrics.score(out, out / "events.selections.txt", psds=False)
    assert report.files == {"scored": 2, "no_prediction": [], "no_annotation": []}
    assert report.metrics["event_based"]["f1"] == 1.0
