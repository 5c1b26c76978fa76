"""Label control of ``predict``: ``labels`` / ``exclude_labels`` keep or drop classes in every output, per-class
thresholds decide each class's events (and the tag F1 of ``score``), all of them recorded in the outputs' metadata
and compared on resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub import batch, metrics
from dcasenet_hub import labels as L
from dcasenet_hub.errors import OptionsError
from dcasenet_hub.inference import InferenceOptions, predict
from dcasenet_hub.inference.outputs import Prediction, detect_events
from dcasenet_hub.inference.settings import select_labels

SR = 24000


def _wav(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    return (0.1 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (300 + 200 * seed) * t)).astype(np.float32)


def _write(path, seconds: float = 2.0, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _wav(seconds, seed), SR)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_labels_and_exclude_labels_restrict_every_array_and_top_scene(responsive_v3):
    """Catches label lists filtered without their arrays (columns out of step with the names), probabilities
    renormalised over the kept classes, ``top_scene`` taken over every scene, a vocabulary that none of ``labels``
    names being emptied instead of kept whole, and exclude_labels ignored."""
    wav = _wav()
    full = predict(responsive_v3, wav, sample_rate=SR, workers=0)
    kept = predict(responsive_v3, wav, sample_rate=SR, workers=0, labels=["dog", "Bark", "park", "bus"])
    scenes, tags, events = [L.SCENES.index(x) for x in ("bus", "park")], [L.TAGS.index("Bark")], [L.EVENTS.index("dog")]
    assert (kept.scene_labels, kept.tag_labels, kept.event_labels) == (("bus", "park"), ("Bark",), ("dog",))
    np.testing.assert_array_equal(kept.scene_probs, full.scene_probs[scenes])  # as computed, not renormalised
    np.testing.assert_array_equal(kept.scene_window_probs, full.scene_window_probs[:, scenes])
    np.testing.assert_array_equal(kept.tag_probs, full.tag_probs[tags])
    np.testing.assert_array_equal(kept.tag_window_probs, full.tag_window_probs[:, tags])
    np.testing.assert_array_equal(kept.event_probs, full.event_probs[:, events])
    assert kept.events == [e for e in full.events if e[2] == "dog"]
    assert kept.top_scene == ("bus", "park")[int(np.argmax(full.scene_probs[scenes]))]
    d = kept.to_dict()
    assert list(d["scene"]["probs"]) == ["bus", "park"] and len(d["scene"]["windows"][0]["probs"]) == 2
    assert d["label_filter"] == {"labels": ["Bark", "bus", "dog", "park"], "exclude_labels": None}

    only_events = predict(responsive_v3, wav, sample_rate=SR, workers=0, labels=["DOG"])  # any case, when unique
    assert only_events.event_labels == ("dog",)
    assert (only_events.scene_labels, only_events.tag_labels) == (L.SCENES, L.TAGS)  # vocabularies not named

    second = L.SCENES[int(np.argsort(-full.scene_probs)[1])]
    dropped = predict(responsive_v3, wav, sample_rate=SR, workers=0, exclude_labels=[full.top_scene, "dog"])
    assert full.top_scene not in dropped.scene_labels and dropped.top_scene == second
    assert dropped.event_labels == tuple(x for x in L.EVENTS if x != "dog") and dropped.tag_labels == L.TAGS
    np.testing.assert_array_equal(dropped.event_probs, np.delete(full.event_probs, L.EVENTS.index("dog"), axis=1))


def test_names_match_exactly_else_by_case_when_unique():
    """Catches case-insensitive matching winning over an exact one (``Knock`` the tag would also drop ``knock`` the
    event), a case-only match that is ambiguous being resolved silently, and names kept in the user's spelling."""
    vocab = (("park",), ("Knock", "Bark"), ("knock", "dog", "Dog"))
    sel = select_labels(vocab, InferenceOptions(labels=["Knock", "BARK"]))
    assert sel.labels == (("park",), ("Knock", "Bark"), ("knock", "dog", "Dog"))  # no event named: all kept
    assert select_labels(vocab, InferenceOptions(exclude_labels=["Knock"])).labels[2] == ("knock", "dog", "Dog")
    assert select_labels(vocab, InferenceOptions(labels=["bark"])).labels[1] == ("Bark",)  # the model's spelling
    with pytest.raises(OptionsError, match="'DOG' matches the event classes dog, Dog by case only"):
        select_labels(vocab, InferenceOptions(labels=["DOG"]))
    with pytest.raises(OptionsError, match="^class_thresholds={'park': 0.5}: 'park' is a scene"):
        select_labels(vocab, InferenceOptions(class_thresholds={"park": 0.5}))
    with pytest.raises(OptionsError, match="^exclude_labels=.*leaves no scene class"):
        select_labels(vocab, InferenceOptions(exclude_labels=["park"]))
    with pytest.raises(OptionsError, match="^exclude_labels=.*'dog', which labels keeps"):
        InferenceOptions(labels=["dog"], exclude_labels=["dog", "Bark"])
    assert InferenceOptions(labels={"b", "a"}) == InferenceOptions(labels=["a", "b", "a"])  # one form
    assert hash(InferenceOptions(class_thresholds={"a": 1, "b": 0.5})) == \
        hash(InferenceOptions(class_thresholds={"b": 0.5, "a": 1.0}))


def test_an_unknown_label_names_close_matches_in_the_api_and_one_line_on_the_command_line(
        responsive_v3, authors_checkpoint, tmp_path, capsys):
    """Catches unknown names ignored (an output without the class asked for), an error without the model's names,
    and the command line ending in a traceback or another exit code than a usage error's."""
    wav = _wav(1.0)
    with pytest.raises(OptionsError, match=r"^labels=\('dgo',\): 'dgo' is not a class of this model \(did you mean "
                                           r"'dog'\?\)"):
        predict(responsive_v3, wav, sample_rate=SR, workers=0, labels=["dgo"])
    with pytest.raises(OptionsError) as info:  # nothing close: every class is listed
        predict(responsive_v3, wav, sample_rate=SR, workers=0, exclude_labels=["zzzzqq"])
    assert "airport" in str(info.value) and "Zipper_(clothing)" in str(info.value) and "piano" in str(info.value)
    with pytest.raises(OptionsError, match=r"^class_thresholds={'Barks': 0.5}: 'Barks' is not a class"):
        predict(responsive_v3, wav, sample_rate=SR, workers=0, class_thresholds={"Barks": 0.5})

    from dcasenet_hub.cli import main

    audio = _write(tmp_path / "a.wav", 1.0)
    base = ["predict", str(audio), "--model", str(authors_checkpoint), "-q"]
    assert main([*base, "-o", str(tmp_path / "o"), "--labels", "dog", "dgo"]) == 2
    assert _one_line_error(capsys).startswith(
        "dcasenet-hub predict: error: --labels dog dgo: 'dgo' is not a class of this model (did you mean 'dog'?)")
    assert main([*base, "-o", str(tmp_path / "one.json"), "--threshold", "Barks=0.5"]) == 2
    assert _one_line_error(capsys).startswith("dcasenet-hub predict: error: --threshold Barks=0.5: 'Barks' is not")
    assert not (tmp_path / "one.json").exists()


def test_a_class_threshold_changes_exactly_that_class_events(responsive_v3):
    """Catches a per-class threshold applied to every class, applied to the wrong column, or ignored; and
    ``Prediction.detect()`` forgetting the recorded thresholds."""
    wav = _wav(4.0, seed=2)
    base = predict(responsive_v3, wav, sample_rate=SR, workers=0)
    c = int(np.argmax(base.event_probs.max(axis=0)))  # the class most sure to have events
    name = L.EVENTS[c]
    low = float(base.event_probs[:, c].max()) - 0.05
    base = predict(responsive_v3, wav, sample_rate=SR, workers=0, threshold=low)
    own = predict(responsive_v3, wav, sample_rate=SR, workers=0, threshold=low, class_thresholds={name: 1.0})
    assert any(e[2] == name for e in base.events)  # a case where the class's threshold matters
    assert [e for e in own.events if e[2] != name] == [e for e in base.events if e[2] != name]
    assert not [e for e in own.events if e[2] == name]
    per_class = np.full(len(L.EVENTS), low)
    per_class[c] = 1.0
    assert own.events == detect_events(own.event_probs, own.event_labels, hop_s=own.event_hop_s, threshold=per_class,
                                       duration_s=own.duration_s)
    assert own.class_thresholds == {name: 1.0} and own.to_dict()["events"]["class_thresholds"] == {name: 1.0}
    assert own.detect() == own.events and own.detect(class_thresholds={}) == base.events


def test_command_line_threshold_takes_numbers_label_values_and_a_json_file(authors_checkpoint, tmp_path, capsys):
    """Catches ``--threshold`` parsed as one float (its repeats or ``LABEL=P`` refused), a later value not winning,
    a file's ``"*"`` ignored, and values checked by the command line instead of the options (the message would not
    be the options' one)."""
    from dcasenet_hub.cli import main

    audio = _write(tmp_path / "in" / "a.wav")
    base = ["predict", str(audio), "--model", str(authors_checkpoint), "-q"]
    assert main([*base, "-o", str(tmp_path / "o1"), "--threshold", "0.4", "--threshold", "dog=0.6"]) == 0
    d = json.loads((tmp_path / "o1" / "a.json").read_text())
    assert d["events"]["threshold"] == 0.4 and d["events"]["class_thresholds"] == {"dog": 0.6}
    assert d["meta"]["threshold"] == 0.4 and d["meta"]["class_thresholds"] == {"dog": 0.6}

    (tmp_path / "t.json").write_text(json.dumps({"*": 0.35, "Bark": 0.7, "dog": 0.2}))
    assert main([*base, "-o", str(tmp_path / "o2"), "--threshold", str(tmp_path / "t.json"),
                 "--threshold", "dog=0.65"]) == 0
    d = json.loads((tmp_path / "o2" / "a.json").read_text())
    assert d["events"]["threshold"] == 0.35 and d["events"]["class_thresholds"] == {"dog": 0.65}
    assert d["tags"]["class_thresholds"] == {"Bark": 0.7}
    assert d["meta"]["class_thresholds"] == {"Bark": 0.7, "dog": 0.65}

    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "o3"), "--threshold", "dog=abc"]) == 2
    assert _one_line_error(capsys) == ("dcasenet-hub predict: error: --threshold dog=abc: the threshold of 'dog' must "
                                       "be a probability between 0 and 1")
    (tmp_path / "bad.json").write_text(json.dumps({"Bark": 2}))
    assert main([*base, "-o", str(tmp_path / "o3"), "--threshold", str(tmp_path / "bad.json")]) == 2
    assert _one_line_error(capsys).endswith(f"--threshold {tmp_path / 'bad.json'}: the threshold of 'Bark' must be "
                                            "a probability between 0 and 1")
    assert not (tmp_path / "o3").exists()


def test_metadata_records_the_label_options_and_resume_recomputes_when_they_change(v3_model, tmp_path):
    """Catches the options missing from the record (a rerun with other classes would keep the old files), recorded
    in a form that never equals itself when read back (tuples vs lists: every rerun recomputes), and folder files
    (scores, event lists) that still hold every class."""
    root = tmp_path / "in"
    _write(root / "a.wav")
    out = tmp_path / "out"

    def run(**options):
        report = batch.run(v3_model, [root], out, task="predict", workers=0, **options)
        return report.done, report.skipped

    assert run(labels=["dog", "alarm"], threshold=0.1) == (1, 0)
    d = json.loads((out / "a.json").read_text())
    assert d["meta"]["labels"] == ["alarm", "dog"] and d["meta"]["exclude_labels"] is None
    assert d["events"]["labels"] == ["alarm", "dog"]
    assert (out / "a.scores.tsv").read_text().splitlines()[0] == "onset\toffset\talarm\tdog"
    assert {line.split(",")[-1] for line in (out / "events.csv").read_text().splitlines()[1:]} <= {"alarm", "dog"}
    assert run(labels=("alarm", "dog", "dog"), threshold=0.1) == (0, 1)  # the same selection
    assert run(labels=["dog"], threshold=0.1) == (1, 0)
    assert run(labels=["dog"], exclude_labels=["park"], threshold=0.1) == (1, 0)
    assert run(labels=["dog"], exclude_labels=["park"], threshold=0.1, class_thresholds={"dog": 0.5}) == (1, 0)
    assert json.loads((out / "a.json").read_text())["meta"]["class_thresholds"] == {"dog": 0.5}
    assert run(labels=["dog"], exclude_labels=["park"], threshold=0.1, class_thresholds={"dog": 0.5}) == (0, 1)
    assert run(labels=["dog"], exclude_labels=["park"], threshold=0.1, class_thresholds={"dog": 0.6}) == (1, 0)


def test_score_runs_on_a_label_filtered_folder_and_lists_the_classes_it_lacks(v3_model, tmp_path):
    """Catches score refusing annotations of classes predict left out (UnknownLabelError for the model's own
    labels), scoring them as misses without saying so, and a scene file whose scene was dropped crashing it."""
    root = tmp_path / "in"
    for i in range(2):
        _write(root / f"rec{i}.wav", seed=i)
    out = tmp_path / "pred"
    batch.run(v3_model, [root], out, task="predict", workers=0, labels=["dog", "alarm", "Bark"],
              exclude_labels=["park"])
    (tmp_path / "events.tsv").write_text("filename\tonset\toffset\tevent_label\nrec0.wav\t0.1\t1.0\tdog\n"
                                         "rec1.wav\t0.5\t1.5\tbaby\nrec1.wav\t0.2\t0.9\talarm\n")
    report = metrics.score(out, tmp_path / "events.tsv", psds=False)
    assert report.task == "events" and report.labels == ["alarm", "dog"]
    assert report.metrics["not_predicted_labels"] == ["baby"]
    assert report.metrics["reference_events"] == {"alarm": 1, "dog": 1}
    assert "baby" in report.table() and "predict kept only some classes" in report.table()

    (tmp_path / "tags.csv").write_text("filename,labels\nrec0.wav,Bark\nrec1.wav,Meow\n")
    tags = metrics.score(out, tmp_path / "tags.csv")
    assert tags.labels == ["Bark"] and tags.metrics["not_predicted_labels"] == ["Meow"]

    (tmp_path / "scenes.csv").write_text("filename,scene_label\nrec0.wav,park\nrec1.wav,bus\n")
    scenes = metrics.score(out, tmp_path / "scenes.csv", task="scenes")
    assert scenes.files["scored"] == 1 and scenes.files["scene_not_predicted"] == ["rec0.wav"]
    assert scenes.metrics["not_predicted_labels"] == ["park"]


def test_tag_f1_uses_each_class_recorded_threshold(tmp_path):
    """Catches the tag F1 taken at the all-class threshold when the predictions record per-class ones, and an
    explicit ``threshold=`` not overriding them."""
    import sklearn.metrics as sk  # the test extra

    rng = np.random.default_rng(4)
    chosen = ["Bark", "Meow", "Knock"]
    own = {"Bark": 0.7, "Meow": 0.2}
    folder = tmp_path / "pred"
    folder.mkdir()
    rows = []
    for f in range(24):
        positives = [t for t in chosen if rng.uniform() < 0.4]
        tags = rng.uniform(0, 1, len(L.TAGS)).astype(np.float32)
        for t in positives:
            tags[L.TAGS.index(t)] = min(1.0, tags[L.TAGS.index(t)] + 0.3)
        p = Prediction(scene_probs=np.full(10, 0.1, np.float32), tag_probs=tags,
                       event_probs=np.zeros((20, 14), np.float32), event_times=np.arange(20, dtype=np.float32) / 10,
                       events=[], scene_labels=L.SCENES, tag_labels=L.TAGS, event_labels=L.EVENTS, threshold=0.4,
                       duration_s=2.0, source=f"in/clip{f}.wav", class_thresholds=own)
        p.save(folder / f"clip{f}.json")
        rows.append(f"clip{f}.wav," + ",".join(positives) if positives else f"clip{f}.wav")
    (tmp_path / "tags.csv").write_text("filename,labels\n" + "\n".join(rows) + "\n")
    report = metrics.score(folder, tmp_path / "tags.csv")
    used = report.labels
    assert set(used) == set(chosen) and report.metrics["class_thresholds"] == own
    y = np.array([[t in rows[f].split(",")[1:] for t in used] for f in range(24)], dtype=int)
    s = np.array([[json.loads((folder / f"clip{f}.json").read_text())["tags"]["probs"][t] for t in used]
                  for f in range(24)])
    decided = (s > np.array([own.get(t, 0.4) for t in used])).astype(int)
    expected = sk.f1_score(y, decided, average=None, zero_division=0)
    for t, v in zip(used, expected):
        assert abs(report.metrics["f1"][t] - v) < 1e-12
    assert abs(report.metrics["f1_micro"] - sk.f1_score(y, decided, average="micro", zero_division=0)) < 1e-12
    at_one = sk.f1_score(y, (s > 0.4).astype(int), average=None, zero_division=0)
    assert not np.allclose(expected, at_one)  # a case where the per-class thresholds matter
    explicit = metrics.score(folder, tmp_path / "tags.csv", threshold=0.4)
    assert explicit.metrics["class_thresholds"] == {}
    for t, v in zip(used, at_one):
        assert abs(explicit.metrics["f1"][t] - v) < 1e-12
