"""Resume trusts only complete, consistent outputs of the same weights; a kill loses at most the files in
flight (content fingerprint of the model, output digests, stale temp files, appended index rows, SIGKILL)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main


def _tone(seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32)


def _folder(root: Path, n: int, seconds: float = 1.0) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        sf.write(root / f"f{i}.wav", _tone(seconds, 16000, i), 16000)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------------------------
# 2. the model's identity is its weights' content
# ----------------------------------------------------------------------------------------------------------------


def test_weights_replaced_between_planning_and_loading_are_refused(tmp_path, v3_model, responsive_v3):
    """A job fingerprints a named model when it is planned and loads it only when some input needs computing; weights
    copied over the folder in between stop the job (a model error, nothing computed) instead of being recorded under
    the first weights' fingerprint.

    Broken variant caught: without the check after loading, the job raises nothing and writes outputs computed with
    the new weights under the old fingerprint, which a later run with the old weights would skip as complete (the
    last lines check that such a run computes its output instead).
    """
    import dcasenet_hub
    from dcasenet_hub.batch import run
    from dcasenet_hub.errors import ModelError
    from dcasenet_hub.hub.api import save_pretrained

    audio = _folder(tmp_path / "in", 1, seconds=2.0)
    model, old, new = tmp_path / "model", tmp_path / "old", tmp_path / "new"
    save_pretrained(v3_model, model)
    save_pretrained(v3_model, old)
    save_pretrained(responsive_v3, new)

    def copy_then_load(name: str):
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(new / f, model / f)
        return dcasenet_hub.from_pretrained(name)

    out = tmp_path / "out"
    with pytest.raises(ModelError, match="changed while the job started"):
        run(str(model), [audio], out, progress=False, load=copy_then_load)
    assert not list(out.glob("*.npz"))
    for f in ("config.json", "model.safetensors"):  # the first weights back: nothing of theirs was recorded
        shutil.copyfile(old / f, model / f)
    report = run(str(model), [audio], out, progress=False)
    assert [i.status for i in report.items] == ["ok"]


def test_weights_copied_over_the_model_folder_are_not_resumed_as_complete(tmp_path, v3_model, responsive_v3):
    from dcasenet_hub.hub.api import save_pretrained
    from dcasenet_hub.inference.pipeline import embed

    audio = _folder(tmp_path / "in", 1, seconds=2.0)
    old, new = tmp_path / "model", tmp_path / "new"
    save_pretrained(v3_model, old)
    save_pretrained(responsive_v3, new)
    out = tmp_path / "out"
    args = ["embed", str(audio), "-o", str(out), "--model", str(old), "--quiet"]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in (old, old / "model.safetensors")}
    folder_stat = old.stat()
    # `cp new/* model/`: both files (weights alone, beside a config that records another weights hash, are refused)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(new / name, old / name)
    assert (old.stat().st_size, old.stat().st_mtime_ns) == (folder_stat.st_size, folder_stat.st_mtime_ns)
    assert before  # the folder's size and date did not change: only the content tells
    assert main(args) == 0
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok"]  # recomputed, not "skipped"
    with np.load(out / "f0.npz") as z:
        np.testing.assert_allclose(z["frame"], embed(responsive_v3, audio / "f0.wav").frame, atol=1e-5)
        assert len(json.loads(str(z["meta"]))["model_sha256"]) == 64
    stamp = (out / "f0.npz").stat().st_mtime_ns
    assert main(args) == 0  # same weights again: complete
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok"]
    assert (out / "f0.npz").stat().st_mtime_ns == stamp  # skipped, not recomputed


def test_the_same_weights_under_another_name_are_the_same_model(tmp_path, authors_checkpoint, v3_model):
    """One checkpoint converted into two folders (each records its own model_id, and the safetensors header embeds
    the config), and a model object saved to a folder: resume skips the outputs of either under the other.

    Broken variant caught: the weights fingerprinted by their files' bytes made cvB another model than cvA (every
    input recomputed), and a model passed from Python another model than its saved folder.
    """
    from dcasenet_hub.batch import run
    from dcasenet_hub.hub.api import save_pretrained

    audio = _folder(tmp_path / "in", 2)
    cv_a, cv_b = tmp_path / "cvA", tmp_path / "cvB"
    for folder in (cv_a, cv_b):
        assert main(["convert", str(authors_checkpoint), "-o", str(folder), "-q"]) == 0
    assert (cv_a / "model.safetensors").read_bytes() != (cv_b / "model.safetensors").read_bytes()
    out = tmp_path / "out"
    assert [i.status for i in run(str(cv_a), [audio], out, progress=False).items] == ["ok", "ok"]
    assert [i.status for i in run(str(cv_b), [audio], out, progress=False).items] == ["skipped", "skipped"]
    saved = tmp_path / "saved"
    save_pretrained(v3_model, saved)
    out2 = tmp_path / "out2"
    assert [i.status for i in run(v3_model, [audio], out2, progress=False).items] == ["ok", "ok"]
    assert [i.status for i in run(str(saved), [audio], out2, progress=False).items] == ["skipped", "skipped"]


def test_an_input_is_identified_by_its_content_not_its_dates(tmp_path, v3_model):
    """An input copied over with the same size and modification time (``cp -p``, ``rsync -t``) is recomputed; one
    only touched (same bytes, new date) is skipped.

    Broken variant caught: with inputs identified by size and modification time, the first rerun skips ``f0`` and
    keeps embeddings of audio that is no longer there, and the ``touch`` rerun recomputes it for nothing.
    """
    from dcasenet_hub.batch import run
    from dcasenet_hub.inference.pipeline import embed

    audio = _folder(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert [i.status for i in run(v3_model, [audio], out, progress=False).items] == ["ok", "ok"]
    f0 = audio / "f0.wav"
    st = f0.stat()
    sf.write(f0, _tone(1.0, 16000, 7), 16000)  # other audio, same length and format: same size
    os.utime(f0, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f0.stat().st_size, f0.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    report = run(v3_model, [audio], out, progress=False)
    assert {i.path.name: i.status for i in report.items} == {"f0.wav": "ok", "f1.wav": "skipped"}
    with np.load(out / "f0.npz") as z:
        np.testing.assert_allclose(z["frame"], embed(v3_model, f0).frame, atol=1e-5)
    stamp = (out / "f0.npz").stat().st_mtime_ns
    os.utime(f0, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: same bytes
    assert [i.status for i in run(v3_model, [audio], out, progress=False).items] == ["skipped", "skipped"]
    assert (out / "f0.npz").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------------------------------------------
# 3. a predict output is complete only when its JSON vouches for the other files
# ----------------------------------------------------------------------------------------------------------------


def test_predict_resume_recomputes_when_csv_and_json_come_from_different_runs(tmp_path, authors_checkpoint):
    audio = _folder(tmp_path / "in", 1, seconds=3.0)
    out, other = tmp_path / "out", tmp_path / "other"
    base = ["predict", str(audio), "--model", str(authors_checkpoint), "--quiet"]
    assert main([*base, "-o", str(out), "--threshold", "1"]) == 0
    assert main([*base, "-o", str(other), "--threshold", "0"]) == 0
    # a run with threshold 0 killed after its .events.csv rename, before its .json
    shutil.copyfile(other / "f0.events.csv", out / "f0.events.csv")
    mixed = (out / "f0.events.csv").read_bytes()
    assert mixed.count(b"\n") == 1 + 14  # threshold 0: every class active (a run with threshold 1 has none)
    assert main([*base, "-o", str(out), "--threshold", "1"]) == 0
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok"]  # recomputed, not "skipped"
    js = json.loads((out / "f0.json").read_text())
    listed = [[e["onset"], e["offset"], e["event_label"]] for e in js["events"]["list"]]
    with open(out / "f0.events.csv", newline="") as fh:
        in_csv = [[float(r[1]), float(r[2]), r[3]] for r in list(csv.reader(fh))[1:]]
    assert in_csv == listed  # the CSV agrees with the JSON again
    assert (out / "f0.events.csv").read_bytes() != mixed
    assert set(js["meta"]["digests"]) == {"events", "scores"}
    # a missing scores file is not complete either
    (out / "f0.scores.tsv").unlink()
    assert main([*base, "-o", str(out), "--threshold", "1"]) == 0
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok"] and (out / "f0.scores.tsv").is_file()


def test_events_csv_lists_what_the_json_vouches_for_not_a_killed_runs_events_file(tmp_path, authors_checkpoint):
    """A run killed between writing an input's .events.csv and its .json leaves the earlier run's .json (which the
    index describes) beside a newer events file; another writer's rebuild of events.csv must not take the latter."""
    audio, out = _folder(tmp_path / "in", 2, seconds=2.0), tmp_path / "out"
    model = ["--model", str(authors_checkpoint), "-q"]
    assert main(["predict", str(audio / "f0.wav"), "-o", str(out), "--threshold", "0.2", *model]) == 0
    vouched = json.loads((out / "f0.json").read_text())["events"]["list"]
    assert vouched  # something to lose
    (out / "f0.events.csv").write_text("filename,onset,offset,event_label\nf0.wav,0.000,0.100,Speech\n")
    assert main(["predict", str(audio / "f1.wav"), "-o", str(out), *model]) == 0  # another input, same folder
    listed = [r for r in _rows(out / "events.csv") if r["filename"] == "f0.wav"]
    assert [(float(r["onset"]), float(r["offset"]), r["event_label"]) for r in listed] == [
        (round(e["onset"], 3), round(e["offset"], 3), e["event_label"]) for e in vouched]


def test_merged_event_files_follow_the_json_when_a_rerun_changes_the_event_formats_or_the_task(
        tmp_path, authors_checkpoint):
    """predict (events.csv), then predict --event-format raven with another threshold, then embed, into one folder:
    events.csv always lists what the indexed .json files hold, and no per-input events file of other settings stays.

    Broken variants caught: events.csv kept only when this run asks for "dcase" (the 0.3-threshold events stay after
    the 0.9 run, and after a later dcase run too, which trusted the old .events.csv beside a .json that does not
    vouch for it); an old a.events.csv left beside the new .json; events.csv and durations.tsv kept by an embed run
    that turned every row into an .npz.
    """
    audio = _folder(tmp_path / "in", 2, seconds=3.0)
    out = tmp_path / "out"
    model = ["--model", str(authors_checkpoint), "-q"]

    def per_file() -> dict[str, int]:
        return {f"f{i}.wav": [r["filename"] for r in _rows(out / "events.csv")].count(f"f{i}.wav") for i in range(2)}

    def listed() -> dict[str, int]:
        return {f"f{i}.wav": len(json.loads((out / f"f{i}.json").read_text())["events"]["list"]) for i in range(2)}

    assert main(["predict", str(audio), "-o", str(out), *model, "--threshold", "0.3"]) == 0
    first = per_file()
    assert first == listed() and sum(first.values()) > 0
    assert main(["predict", str(audio), "-o", str(out), *model, "--threshold", "0.9", "--event-format", "raven"]) == 0
    assert per_file() == listed() != first
    assert not list(out.glob("f*.events.csv")) and len(list(out.glob("f*.Table.1.selections.txt"))) == 2
    more = tmp_path / "more"
    more.mkdir()
    sf.write(more / "g.wav", _tone(3.0, 16000, 5), 16000)
    assert main(["predict", str(more), "-o", str(out), *model, "--threshold", "0.9"]) == 0  # a dcase run
    assert per_file() == listed()
    assert main(["embed", str(audio), "-o", str(out), *model]) == 0
    assert [r["filename"] for r in _rows(out / "events.csv")] == ["g.wav"] * len(
        json.loads((out / "g.json").read_text())["events"]["list"])
    assert (out / "durations.tsv").read_text().splitlines()[1:] == ["g.wav\t3.000"]
    assert main(["embed", str(more), "-o", str(out), *model]) == 0  # no prediction is indexed any more
    assert _rows(out / "events.csv") == [] and (out / "durations.tsv").read_text().splitlines()[1:] == []


def test_another_runs_input_with_the_same_output_name_fails_instead_of_taking_or_overwriting_it(
        tmp_path, authors_checkpoint, capsys):
    """in1/x.wav today, in2/x.wav tomorrow, into one folder: same size and date, other audio. The second is neither
    skipped on the first's output nor written over it while the first still exists."""
    a, b = tmp_path / "in1" / "x.wav", tmp_path / "in2" / "x.wav"
    for path, seed in ((a, 1), (b, 2)):
        path.parent.mkdir()
        sf.write(path, _tone(2.0, 16000, seed), 16000)
        os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    out = tmp_path / "out"
    model = ["--model", str(authors_checkpoint), "-q"]
    assert main(["predict", str(a.parent), "-o", str(out), *model]) == 0
    first = (out / "x.json").read_bytes()
    capsys.readouterr()
    assert main(["predict", str(b.parent), "-o", str(out), *model]) == 1
    assert f"holds the result of {a}" in capsys.readouterr().err
    assert (out / "x.json").read_bytes() == first
    rows = {r["input"]: r for r in _rows(out / "index.csv")}
    assert rows[str(a)]["status"] == "ok" and rows[str(b)]["status"] == "failed"
    assert [r["filename"] for r in _rows(out / "events.csv")].count("x.wav") == len(json.loads(first)["events"]["list"])
    a.unlink()  # the first input is gone: its output is the second's to write, and no longer the first's
    assert main(["predict", str(b.parent), "-o", str(out), *model]) == 0
    second = json.loads((out / "x.json").read_text())
    assert second["source"] == str(b)
    assert [(r["input"], r["status"], r["output"]) for r in _rows(out / "index.csv")] == [(str(b), "ok", "x.json")]
    assert [r["filename"] for r in _rows(out / "events.csv")].count("x.wav") == len(second["events"]["list"])


def test_two_writers_planning_one_output_name_for_two_inputs_never_overwrite_each_other(tmp_path, v3_model):
    """Two writers at once, in1/x.wav and in2/x.wav, into one folder: both plan x.npz before either wrote it. The
    second to write fails its input (naming the first) instead of replacing the first's result.

    Broken variant caught: with the owner checked only when the job is planned, the second writer replaces x.npz
    and reports ok, and the first input's row leaves index.csv (its result is lost with exit 0).
    """
    import dcasenet_hub
    from dcasenet_hub.batch import run
    from dcasenet_hub.hub.api import save_pretrained

    a, b = tmp_path / "in1" / "x.wav", tmp_path / "in2" / "x.wav"
    for path, seed in ((a, 1), (b, 2)):
        path.parent.mkdir()
        sf.write(path, _tone(1.0, 16000, seed), 16000)
    model = tmp_path / "model"
    save_pretrained(v3_model, model)
    out = tmp_path / "out"

    def first_writer_finishes_meanwhile(name: str):  # the second writer has planned; the first writes now
        assert [i.status for i in run(v3_model, [a], out, progress=False).items] == ["ok"]
        return dcasenet_hub.from_pretrained(name)

    report = run(str(model), [b], out, progress=False, load=first_writer_finishes_meanwhile)
    assert [i.status for i in report.items] == ["failed"]
    assert f"holds the result of {a}" in report.items[0].error
    with np.load(out / "x.npz") as z:
        assert json.loads(str(z["meta"]))["source_key"] == str(a)
    assert {r["input"]: r["status"] for r in _rows(out / "index.csv")} == {str(a): "ok", str(b): "failed"}


def test_a_symlink_repointed_to_new_content_is_one_input_recomputed(tmp_path, v3_model):
    """lk/x.wav -> in/f0.wav, then (as git-annex records an edit) lk/x.wav -> in/f1.wav: the rerun recomputes x.npz
    from the new content, and index.csv has one row for lk/x.wav.

    Broken variant caught: inputs keyed by their fully resolved path made the re-pointed link another input, which
    failed for good ("x.npz holds the result of in/f0.wav", a file the user never named) and gave two rows.
    """
    from dcasenet_hub.batch import run
    from dcasenet_hub.inference.pipeline import embed

    audio = _folder(tmp_path / "in", 2)
    links = tmp_path / "lk"
    links.mkdir()
    (links / "x.wav").symlink_to("../in/f0.wav")
    out = tmp_path / "out"
    assert [i.status for i in run(v3_model, [links], out, progress=False).items] == ["ok"]
    (links / "x.wav").unlink()
    (links / "x.wav").symlink_to("../in/f1.wav")
    assert [i.status for i in run(v3_model, [links], out, progress=False).items] == ["ok"]
    with np.load(out / "x.npz") as z:
        np.testing.assert_allclose(z["frame"], embed(v3_model, audio / "f1.wav").frame, atol=1e-5)
    assert [(r["input"], r["status"]) for r in _rows(out / "index.csv")] == [(str(links / "x.wav"), "ok")]
    assert [i.status for i in run(v3_model, [links], out, progress=False).items] == ["skipped"]


def test_a_new_input_with_an_existing_outputs_name_fails_alone(tmp_path, v3_model):
    """in/x.wav is done; then in/x.aiff appears (found first, as it sorts first) and both are run into the folder:
    x.wav keeps its complete output (skipped, ok) and only x.aiff fails, naming it.

    Broken variant caught: the first found of the two took the name, so x.aiff failed on x.wav's output and x.wav
    failed as "would overwrite that of x.aiff": both rows failed and x.wav's result left index.csv.
    """
    from dcasenet_hub.batch import run

    audio = tmp_path / "in"
    audio.mkdir()
    sf.write(audio / "x.wav", _tone(1.0, 16000, 1), 16000)
    out = tmp_path / "out"
    assert [i.status for i in run(v3_model, [audio], out, progress=False).items] == ["ok"]
    sf.write(audio / "x.aiff", _tone(1.0, 16000, 2), 16000)
    report = run(v3_model, [audio], out, progress=False)
    assert {i.path.name: i.status for i in report.items} == {"x.aiff": "failed", "x.wav": "skipped"}
    assert f"would overwrite that of {audio / 'x.wav'}" in next(i.error for i in report.items if i.status == "failed")
    assert {Path(r["input"]).name: r["status"] for r in _rows(out / "index.csv")} == {"x.aiff": "failed",
                                                                                      "x.wav": "ok"}


@pytest.mark.parametrize("damage", ["npz cut to 0 bytes", "npz cut to 1000 bytes", "json meta not an object"])
def test_a_damaged_output_is_recomputed_and_the_others_skipped(tmp_path, authors_checkpoint, damage, capsys):
    task, suffix = ("predict", ".json") if damage.startswith("json") else ("embed", ".npz")
    audio, out = _folder(tmp_path / "in", 3), tmp_path / "out"
    cmd = [task, str(audio), "-o", str(out), "--model", str(authors_checkpoint)]
    assert main(cmd) == 0
    damaged = out / f"f1{suffix}"
    if suffix == ".npz":
        with open(damaged, "r+b") as fh:
            fh.truncate(int(damage.split()[3]))
    else:
        damaged.write_text(json.dumps({**json.loads(damaged.read_text()), "meta": [1]}))
    capsys.readouterr()
    assert main(cmd) == 0, capsys.readouterr().err
    assert "3 inputs: 1 done, 2 already complete (skipped), 0 failed" in capsys.readouterr().err
    if suffix == ".npz":
        with np.load(damaged) as z:
            assert z["clip"].shape == (512,)
    else:
        assert json.loads(damaged.read_text())["meta"]["task"] == "predict"


# ----------------------------------------------------------------------------------------------------------------
# 8. a kill loses at most the files in flight: stale temporary files, appended index rows, SIGKILL of a real run
# ----------------------------------------------------------------------------------------------------------------


def test_stale_temp_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from dcasenet_hub._io import TMP_TAG, clean_stale_temp_files, host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "sub").mkdir()
    dead = tmp_path / "sub" / f".a.npz.{TMP_TAG}-{gone.pid}-{host_tag()}.x1y2.tmp"
    live = tmp_path / f".b.npz.{TMP_TAG}-{os.getppid()}-{host_tag()}.abc_.tmp"  # another shard, still running
    mine = tmp_path / f".c.npz.{TMP_TAG}-{os.getpid()}-{host_tag()}.abc_.tmp"
    other_host = tmp_path / f".d.npz.{TMP_TAG}-{gone.pid}-elsewhere.abc_.tmp"
    foreign = [tmp_path / ".e.npz.zz.tmp", tmp_path / f"e.npz.{TMP_TAG}-{gone.pid}-{host_tag()}.abc_.tmp.keep"]
    for p in (dead, live, mine, other_host, *foreign):
        p.write_bytes(b"x")
    assert clean_stale_temp_files(tmp_path) == [dead]
    assert not dead.exists() and all(p.exists() for p in (live, mine, other_host, *foreign))


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(args: list[str], kill: tuple[str, int] | None = None):
    import subprocess
    import sys

    if kill is None:
        cmd = [sys.executable, "-m", "dcasenet_hub.cli", *args]
    else:  # the kill is injected from outside: a wrapper of os.replace in the child (tests/kill_at_rename.py)
        cmd = [sys.executable, str(Path(__file__).with_name("kill_at_rename.py")), kill[0], str(kill[1]), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)


def _journal_done(out: Path) -> list[str]:
    """Inputs recorded ``ok`` in the folder's state and journals (what the next rebuild puts in index.csv)."""
    done = []
    state = out / ".dcasenet-hub"
    for path in [state / "state.jsonl", *sorted((state / "journal").glob("*.jsonl"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                if rec["status"] == "ok":
                    done.append(Path(rec["key"]).stem)
    return sorted(set(done))


@pytest.mark.parametrize(("task", "when", "n", "finished"), [
    ("embed", "AFTER", 5, 3),     # renames: state.jsonl, index.csv, f0, f1, f2 -> three .npz complete
    ("embed", "BEFORE", 5, 2),    # killed with f2.npz's complete temporary file not yet renamed
    ("predict", "AFTER", 11, 2),  # state, index, events.csv, 3 per input: f2's .events.csv and .scores.tsv, no .json
    ("predict", "BEFORE", 12, 2),  # f2's .json is a temporary file
])
@pytest.mark.integration
def test_sigkill_at_a_write_point_then_rerun_loses_and_recomputes_nothing(tmp_path, authors_checkpoint, task, when,
                                                                          n, finished):
    import signal

    audio = _folder(tmp_path / "in", 6, seconds=0.6)
    out = tmp_path / "out"
    args = [task, str(audio), "-o", str(out), "--model", str(authors_checkpoint), "--workers", "0", "--quiet"]
    suffixes = (".npz",) if task == "embed" else (".events.csv", ".scores.tsv", ".json")
    names = [f"f{i}" for i in range(6)]

    killed = _cli(args, kill=(when, n))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = [s for s in names if (out / f"{s}{suffixes[-1]}").is_file()]
    assert done == names[:finished]
    # the finished inputs are in the journal already (records appended as they finish)
    indexed = _journal_done(out)
    assert indexed == done[:len(indexed)] and len(done) - len(indexed) <= 1  # at most the input in flight is missing
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for s in done for p in (out / f"{s}{x}" for x in suffixes)}
    left = sorted(p.name for p in out.rglob("*.tmp"))
    assert bool(left) == (when == "BEFORE")  # the kill before a rename leaves its temporary file

    rerun = _cli([a for a in args if a != "--quiet"])  # with its summary
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - finished} done, {finished} already complete (skipped)" in rerun.stderr
    rows = _rows(out / "index.csv")
    assert sorted(Path(r["input"]).stem for r in rows) == names  # one row per input
    assert {r["status"] for r in rows} == {"ok"}  # the folder's state; the summary above counts the skipped
    for p, (mtime, data) in kept.items():  # nothing finished before the kill was recomputed
        assert (p.stat().st_mtime_ns, p.read_bytes()) == (mtime, data), p
    assert not list(out.rglob("*.tmp"))  # no temporary file left
    for s in names:  # every input's outputs complete, from one run
        assert all((out / f"{s}{x}").is_file() for x in suffixes)
        if task == "predict":
            meta = json.loads((out / f"{s}.json").read_text())["meta"]
            assert meta["digests"] == {"events": _sha(out / f"{s}.events.csv"),
                                       "scores": _sha(out / f"{s}.scores.tsv")}
    if task == "predict":
        with open(out / "events.csv", newline="") as fh:
            merged = list(csv.reader(fh))[1:]
        expected = []
        for s in names:
            with open(out / f"{s}.events.csv", newline="") as fh:
                expected += list(csv.reader(fh))[1:]
        assert merged == expected


def test_every_rename_follows_an_fsync_of_the_file(tmp_path, monkeypatch):
    import os

    from dcasenet_hub import _io

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(f"replace:{Path(src).name}")
        return real_replace(src, dst)

    monkeypatch.setattr(_io.os, "fsync", fsync)
    monkeypatch.setattr(_io.os, "replace", replace)
    _io.atomic_write_text(tmp_path / "a.txt", "hello")
    tmp = calls[-2].split(":", 1)[1] if len(calls) >= 2 else ""
    assert calls[0] == f"fsync:{tmp}" and calls[1] == f"replace:{tmp}" and tmp.endswith(".tmp"), calls
    assert calls[2] == f"fsync:{tmp_path.name}"  # the folder, so the new name itself survives a power loss


# ----------------------------------------------------------------------------------------------------------------
# 20. untrained weights: embed and HEAR warn as predict does; the .npz records provenance and trained tasks
# ----------------------------------------------------------------------------------------------------------------


def test_embed_and_hear_warn_about_untrained_weights_and_npz_records_provenance(tmp_path, v3_model, caplog):
    import logging

    import torch

    from dcasenet_hub import hear
    from dcasenet_hub.hub.api import save_pretrained
    from dcasenet_hub.inference.pipeline import embed

    import copy

    assert v3_model.config.trained_tasks == ()  # the fixture weights are marked untrained
    wav = _tone(1.0, 24000, 0)
    fresh = copy.deepcopy(v3_model)  # the warning is said once per model object; the shared fixture may have said it
    with caplog.at_level(logging.WARNING, logger="dcasenet_hub"):
        emb = embed(fresh, wav, sample_rate=24000)
    assert [r for r in caplog.records if r.levelno == logging.WARNING
            and "No task is marked as trained" in r.getMessage()]
    emb.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as z:
        meta = json.loads(str(z["meta"]))
    assert meta["provenance"] == v3_model.config.provenance and meta["trained_tasks"] == []

    folder = tmp_path / "model"
    save_pretrained(v3_model, folder)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dcasenet_hub"):
        m = hear.load_model(str(folder), hop=0.8)
        hear.get_scene_embeddings(torch.zeros(2, 48000), m)
        hear.get_scene_embeddings(torch.zeros(1, 48000), m)
    said = [r for r in caplog.records if r.levelno == logging.WARNING
            and "No task is marked as trained" in r.getMessage()]
    assert len(said) == 1 and said[0].name == "dcasenet_hub.integrations.hear"  # once, at load, not per batch

    # the command line records them too
    audio = _folder(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["embed", str(audio), "-o", str(out), "--model", str(folder), "--quiet"]) == 0
    with np.load(out / "f0.npz") as z:
        meta = json.loads(str(z["meta"]))
    assert "provenance" in meta and meta["trained_tasks"] == []
