"""dcasenet-hub embed / predict / plot: mixed folders, index, exit codes, resume, atomic writes, shards, CLI == API."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main
from dcasenet_hub.inference.pipeline import embed, predict


def _tone(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal((n, channels)) + 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)[:, None]
    return x[:, 0] if channels == 1 else x


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", _tone(2.0, 44100, 1), 44100)
    sf.write(root / "sub" / "b.flac", _tone(1.5, 16000, 2, channels=2), 16000)
    (root / "bad.wav").write_text("this is not audio\n")
    (root / "empty.wav").write_bytes(b"")
    nan = _tone(1.0, 24000, 3).astype(np.float32)
    nan[500] = np.nan
    sf.write(root / "nan.wav", nan, 24000, subtype="FLOAT")
    sf.write(root / "short.wav", _tone(0.05, 24000, 4), 24000)
    (root / "notes.txt").write_text("ignored: not an audio extension\n")
    return root


def _index(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {Path(r["input"]).name: r for r in csv.DictReader(fh)}


def test_help_documents_exit_codes(capsys):
    for cmd in ("embed", "predict", "plot"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes" in out and "2  usage error" in out


def test_embed_mixed_folder_outputs_index_exit_code_and_equals_api(mixed_folder, tmp_path, authors_checkpoint,
                                                                  v3_model, capsys):
    out = tmp_path / "out"
    rc = main(["embed", str(mixed_folder), "-o", str(out), "--model", str(authors_checkpoint), "--quiet"])
    assert rc == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz")) == ["a.npz", "sub/b.npz"]
    idx = _index(out / "index.csv")
    assert set(idx) == {"a.wav", "b.flac", "bad.wav", "empty.wav", "nan.wav", "short.wav"}
    assert idx["a.wav"]["status"] == "ok" and float(idx["a.wav"]["duration_s"]) == pytest.approx(2.0)
    assert idx["a.wav"]["output"] == "a.npz"  # relative to OUTDIR: the same from any working directory
    assert "not a readable audio file" in idx["bad.wav"]["error"]
    assert "empty" in idx["empty.wav"]["error"]
    assert "NaN" in idx["nan.wav"]["error"]
    assert "too short" in idx["short.wav"]["error"]
    assert all(idx[k]["status"] == "failed" for k in ("bad.wav", "empty.wav", "nan.wav", "short.wav"))
    err = capsys.readouterr().err
    assert "2 done" in err and "4 failed" in err and "bad.wav" in err
    # CLI output == Python API
    for rel, src in (("a.npz", mixed_folder / "a.wav"), ("sub/b.npz", mixed_folder / "sub" / "b.flac")):
        api = embed(v3_model, src)
        with np.load(out / rel) as z:
            np.testing.assert_allclose(z["frame"], api.frame, atol=1e-6)
            np.testing.assert_allclose(z["frame_times"], api.frame_times, atol=1e-6)
            np.testing.assert_allclose(z["clip"], api.clip, atol=1e-6)
            meta = json.loads(str(z["meta"]))
        assert meta["level"] == "both" and meta["hop_s"] == pytest.approx(0.8)


def test_resume_skips_complete_outputs_and_overwrite_recomputes(mixed_folder, tmp_path, authors_checkpoint):
    out = tmp_path / "out"
    args = ["embed", str(mixed_folder / "a.wav"), str(mixed_folder / "sub"), "-o", str(out), "--model",
            str(authors_checkpoint), "--quiet"]
    assert main(args) == 0
    npz = out / "a.npz"
    first = npz.stat().st_mtime_ns
    assert main(args) == 0
    assert npz.stat().st_mtime_ns == first  # not rewritten
    rows = _index(out / "index.csv")
    assert {r["status"] for r in rows.values()} == {"ok"}  # the folder's state: complete (this run skipped them)
    assert float(rows["a.wav"]["duration_s"]) == pytest.approx(2.0)
    assert main([*args, "--level", "clip"]) == 0  # other settings: recomputed
    with np.load(npz) as z:
        assert set(z.files) == {"clip", "meta"}
    second = npz.stat().st_mtime_ns
    assert main([*args, "--level", "clip", "--overwrite"]) == 0
    assert npz.stat().st_mtime_ns != second
    assert {r["status"] for r in _index(out / "index.csv").values()} == {"ok"}


def test_interrupted_write_leaves_no_partial_file(mixed_folder, tmp_path, authors_checkpoint, monkeypatch):
    out = tmp_path / "out"
    args = ["embed", str(mixed_folder / "a.wav"), "-o", str(out), "--model", str(authors_checkpoint), "--quiet"]
    real = np.savez

    def failing_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", failing_savez)
    assert main(args) == 1
    assert not (out / "a.npz").exists()
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [  # no temporary file left behind
        "index.csv", "lock", "outputs.lock", "state.jsonl"]
    row = _index(out / "index.csv")["a.wav"]
    assert row["status"] == "failed" and "disk full" in row["error"]
    monkeypatch.setattr(np, "savez", real)
    assert main(args) == 0 and (out / "a.npz").is_file()


def test_ctrl_c_leaves_an_index_of_what_finished_and_says_how_to_continue(tmp_path, authors_checkpoint, monkeypatch,
                                                                          capsys):
    """Ctrl-C after the first of three inputs: exit 130, index.csv lists that input as ok and the others as pending,
    and the message says that rerunning the same command does the rest (which it does).

    Broken variant caught: the end-of-run index was built only after a run that ended normally, so every finished
    input still read "pending" after Ctrl-C.
    """
    import dcasenet_hub.inference.pipeline as pipeline

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"c{i}.wav", _tone(1.0, 24000, i), 24000)
    out = tmp_path / "out"
    args = ["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint), "-q"]
    real = pipeline.iterate

    def interrupted(*a, **kw):
        results = real(*a, **kw)
        yield next(results)
        results.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "iterate", interrupted)
    assert main(args) == 130
    assert "interrupted; finished inputs are kept: rerun the same command to do the rest" in capsys.readouterr().err
    assert sorted(r["status"] for r in _index(out / "index.csv").values()) == ["ok", "pending", "pending"]
    monkeypatch.undo()
    assert main(args) == 0
    assert sorted(r["status"] for r in _index(out / "index.csv").values()) == ["ok"] * 3


def test_predict_outputs_equal_api(mixed_folder, tmp_path, authors_checkpoint, v3_model):
    out = tmp_path / "pred"
    rc = main(["predict", str(mixed_folder / "a.wav"), "-o", str(out), "--model", str(authors_checkpoint),
               "--quiet", "--threshold", "0.5", "--median-filter", "0.3"])
    assert rc == 0
    api = predict(v3_model, mixed_folder / "a.wav", threshold=0.5, median_filter=0.3)
    d = json.loads((out / "a.json").read_text())
    assert d["scene"]["top"] == api.top_scene
    np.testing.assert_allclose([d["scene"]["probs"][k] for k in api.scene_labels], api.scene_probs, atol=1e-5)
    np.testing.assert_allclose([d["tags"]["probs"][k] for k in api.tag_labels], api.tag_probs, atol=1e-5)
    assert [(e["onset"], e["offset"], e["event_label"]) for e in d["events"]["list"]] == api.events
    assert d["meta"]["threshold"] == 0.5
    with open(out / "a.events.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(float(r["onset"]), float(r["offset"]), r["event_label"]) for r in rows] == api.events
    assert all(r["filename"] == "a.wav" for r in rows)
    scores = np.loadtxt(out / "a.scores.tsv", delimiter="\t", skiprows=1, ndmin=2)
    header = (out / "a.scores.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["onset", "offset", *api.event_labels]
    np.testing.assert_allclose(scores[:, 0], api.event_times, atol=1e-3)
    np.testing.assert_allclose(scores[:, 2:], api.event_probs, atol=1e-5)
    assert (out / "events.csv").read_text().splitlines()[1:] == (out / "a.events.csv").read_text().splitlines()[1:]


def test_shards_partition_inputs_and_list_files(tmp_path, authors_checkpoint):
    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(6):
        sf.write(src / f"f{i}.wav", _tone(0.3, 24000, i), 24000)
    listing = tmp_path / "files.txt"
    listing.write_text("# my files\n" + "".join(f"corpus/f{i}.wav\n" for i in range(6)))
    out = tmp_path / "out"
    seen: list[str] = []
    for shard in ("1/2", "2/2"):
        rc = main(["embed", str(listing), "-o", str(out), "--model", str(authors_checkpoint), "--quiet",
                   "--shard", shard, "--level", "clip"])
        assert rc == 0
        seen = list(_index(out / "index.csv"))  # one index: every shard's inputs
    assert sorted(seen) == [f"f{i}.wav" for i in range(6)]
    assert sorted(p.name for p in out.glob("*.npz")) == [f"f{i}.npz" for i in range(6)]


def test_usage_errors_exit_2(tmp_path, authors_checkpoint, capsys):
    model = ["--model", str(authors_checkpoint)]
    assert main(["embed", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "o"), *model]) == 2
    assert f"input not found: {tmp_path / 'missing.wav'}; check the path" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert main(["embed", str(tmp_path / "emptydir"), "-o", str(tmp_path / "o"), *model]) == 2
    assert "no audio files found" in capsys.readouterr().err
    sf.write(tmp_path / "x.wav", _tone(0.3, 24000, 1), 24000)
    assert main(["embed", str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), "--shard", "3/2", *model]) == 2
    assert "1 <= I <= N" in capsys.readouterr().err


@pytest.mark.parametrize("args", ["embed x.wav -o o --layer foo", "embed x.wav", "predict",
                                  "embed x.wav -o o --hop 0.1abc", "data make-mini"])
def test_argument_errors_are_one_line_naming_help(args, capsys):
    argv = args.split()
    command = "dcasenet-hub " + " ".join(argv[:2] if argv[0] == "data" else argv[:1])
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err  # no usage block before it
    assert err.startswith(f"{command}: error: ") and err.rstrip().endswith(f"(see `{command} --help`)"), err


@pytest.mark.parametrize("args, said", [
    ("embed x.wav -o o --hopp 0.4", "dcasenet-hub embed: error: unrecognized arguments: --hopp 0.4 (did you mean "
                                    "--hop?) (see `dcasenet-hub embed --help`)"),
    ("data make-mini -o m --sed-duraton 3", "dcasenet-hub data make-mini: error: unrecognized arguments: "
                                            "--sed-duraton 3 (did you mean --sed-duration?)"),
    ("embd x.wav", "dcasenet-hub: error: argument COMMAND: invalid choice: 'embd' (did you mean embed?)"),
    ("embed x.wav -o o --layer grus", "dcasenet-hub embed: error: argument --layer: invalid choice: 'grus' (did you "
                                      "mean gru?)"),
    ("embed x.wav -o o --layer zzz", "dcasenet-hub embed: error: argument --layer: invalid choice: 'zzz' (choose "
                                     "from 'gru', 'conv', 'scene')"),
    # a required argument missing as well: both said (argparse reports the typo only once the rest is there)
    ("score out --truht t.tsv", "dcasenet-hub score: error: the following arguments are required: --truth; "
                                "unrecognized arguments: --truht (did you mean --truth?)")])
def test_a_mistyped_flag_or_choice_is_named_by_its_command_with_the_close_spelling(args, said, capsys):
    """Broken variant caught: an unknown flag of a sub-command was reported by the top-level parser ("dcasenet-hub:
    error: unrecognized arguments", pointing at `dcasenet-hub --help`), and no close spelling was offered."""
    with pytest.raises(SystemExit) as e:
        main(args.split())
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(said) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command, name", [("predict", "out.txt"), ("embed", "emb.wav"), ("embed", "emb.npy"),
                                           ("predict", "p.json.gz"), ("embed", "e.mat")])
def test_an_output_name_with_a_file_extension_it_does_not_write_is_refused_not_made_a_folder(
        tmp_path, authors_checkpoint, capsys, command, name):
    """Broken variant caught: ``predict a.wav -o out.txt`` made a folder named out.txt (exit 0, nothing said with
    -q), where the user expected a file."""
    sf.write(tmp_path / "a.wav", _tone(0.3, 24000, 1), 24000)
    out = tmp_path / name
    assert main([command, str(tmp_path / "a.wav"), "-o", str(out), "--model", str(authors_checkpoint), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"-o {out}: {command} writes one " in err and f"give a name without {out.suffix}" in err
    assert not out.exists()
    out.mkdir()  # a folder that exists is a folder, whatever its name
    assert main([command, str(tmp_path / "a.wav"), "-o", str(out), "--model", str(authors_checkpoint), "-q"]) == 0


def test_a_single_file_output_records_what_a_folder_runs_output_records(tmp_path, authors_checkpoint):
    """``predict a.wav -o a.json`` and ``embed a.wav -o a.npz`` record the settings, the weights' and the input's
    identity as a folder run's outputs of the same input do.

    Broken variant caught: the single-file .json recorded only format_version and duration_s.
    """
    import json

    sf.write(tmp_path / "a.wav", _tone(1.0, 24000, 1), 24000)
    model = ["--model", str(authors_checkpoint), "-q"]
    for command, name in (("predict", "a.json"), ("embed", "a.npz")):
        assert main([command, str(tmp_path / "a.wav"), "-o", str(tmp_path / "one" / name), *model]) == 0
        assert main([command, str(tmp_path / "a.wav"), "-o", str(tmp_path / f"folder-{command}"), *model]) == 0

    def meta(path: Path) -> dict:
        if path.suffix == ".json":
            return json.loads(path.read_text())["meta"]
        with np.load(path) as z:
            return json.loads(str(z["meta"]))

    for name in ("a.json", "a.npz"):
        single = meta(tmp_path / "one" / name)
        folder = meta(tmp_path / f"folder-{'predict' if name.endswith('json') else 'embed'}" / name)
        folder.pop("digests", None)
        assert single == folder, name
        assert len(single["model_sha256"]) == len(single["source_sha256"]) == 64 and single["task"]


def test_a_single_file_output_records_the_input_as_it_was_processed(tmp_path, authors_checkpoint, monkeypatch):
    """The input is hashed before it is decoded: a file replaced while it is processed is recorded as it was read.

    Broken variant caught: the identity was taken after inference, so the output recorded the replacement's
    size and SHA-256 beside results computed from the first content.
    """
    import hashlib
    import json

    from dcasenet_hub.inference import pipeline

    source = tmp_path / "a.wav"
    sf.write(source, _tone(1.0, 24000, 1), 24000)
    first = hashlib.sha256(source.read_bytes()).hexdigest()
    real = pipeline.iterate

    def replaced_meanwhile(*args, **kwargs):
        for result in real(*args, **kwargs):
            sf.write(source, _tone(1.5, 24000, 2), 24000)  # decoded already; replaced before the result is written
            yield result

    monkeypatch.setattr(pipeline, "iterate", lambda *a, **k: replaced_meanwhile(*a, **k))
    out = tmp_path / "a.json"
    assert main(["predict", str(source), "-o", str(out), "--model", str(authors_checkpoint), "-q"]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["source_sha256"] == first and meta["duration_s"] == 1.0


def test_quiet_says_nothing_of_a_run_that_went_well_and_everything_of_one_that_did_not(tmp_path, authors_checkpoint,
                                                                                        capsys):
    sf.write(tmp_path / "x.wav", _tone(0.3, 24000, 1), 24000)
    model = ["--model", str(authors_checkpoint), "-q"]

    def said() -> list[str]:  # what the command printed of its own (the untrained-weights warning is a warning)
        captured = capsys.readouterr()
        return [line for line in (captured.out + captured.err).splitlines() if not line.startswith("WARNING")]

    assert main(["embed", str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), *model]) == 0 and said() == []
    assert main(["predict", str(tmp_path / "x.wav"), "-o", str(tmp_path / "x.json"), *model]) == 0 and said() == []
    assert main(["convert", str(authors_checkpoint), "-o", str(tmp_path / "m"), "-q"]) == 0 and said() == []
    (tmp_path / "bad.wav").write_bytes(b"")
    assert main(["embed", str(tmp_path / "bad.wav"), str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), *model]) == 1
    lines = said()
    assert lines[0].startswith("dcasenet-hub embed: 2 inputs: 0 done, 1 already complete (skipped), 1 failed")
    assert "bad.wav: is empty" in lines[1]

def test_a_missing_input_among_others_fails_alone(tmp_path, authors_checkpoint, monkeypatch, capsys):
    """Named relative to the working directory, as typed; index.csv names every input by its absolute path."""
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "x.wav", _tone(0.3, 24000, 1), 24000)
    (tmp_path / "link.wav").symlink_to("nowhere.wav")
    rc = main(["embed", "typo.wav", "link.wav", "x.wav", "-o", "out", "--model", str(authors_checkpoint), "-q"])
    assert rc == 1 and "typo.wav: input not found; check the path" in capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "out" / "index.csv").open()))
    assert [(r["input"], r["status"]) for r in rows] == [(str(tmp_path / "link.wav"), "failed"),
                                                         (str(tmp_path / "typo.wav"), "failed"),
                                                         (str(tmp_path / "x.wav"), "ok")]


def test_output_collision_is_reported_not_overwritten(tmp_path, authors_checkpoint):
    sf.write(tmp_path / "x.wav", _tone(0.3, 24000, 1), 24000)
    sf.write(tmp_path / "x.flac", _tone(0.3, 24000, 2), 24000)
    out = tmp_path / "out"
    rc = main(["embed", str(tmp_path / "x.wav"), str(tmp_path / "x.flac"), "-o", str(out), "--model",
               str(authors_checkpoint), "--quiet"])
    assert rc == 1
    idx = _index(out / "index.csv")
    assert idx["x.wav"]["status"] == "ok" and "would overwrite" in idx["x.flac"]["error"]



# ----------------------------------------------------------------------------------------------------------------
# The library behind the command: dcasenet_hub.batch
# ----------------------------------------------------------------------------------------------------------------


def test_audio_extensions_are_what_libsndfile_reads():
    """One list for the package: both earlier lists' formats that libsndfile decodes, and no WavPack (.wv)."""
    from dcasenet_hub.batch import AUDIO_EXTENSIONS

    assert {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".caf", ".w64", ".rf64", ".htk", ".nist",
            ".sph"} <= AUDIO_EXTENSIONS
    assert ".wv" not in AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_discover_finds_every_audio_extension_hidden_and_list_files(tmp_path):
    from dcasenet_hub import batch

    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ("a.wav", "sub/b.FLAC", "c.sph", "d.htk", ".hidden/e.wav", "notes.txt", "f.wv"):
        (root / name).write_bytes(b"x")
    listing = tmp_path / "more.lst"
    listing.write_text("# comment\nin/a.wav\n\nother/g.mp3\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "g.mp3").write_bytes(b"x")
    items = batch.discover([root, listing])
    got = [(i.path.relative_to(tmp_path).as_posix(), i.rel.as_posix(), i.status) for i in items]
    # the folder's files sorted, relative to it; the list's a.wav comes once; g.mp3 relative to the lists' common parent
    assert got == [("in/a.wav", "a.wav", ""), ("in/c.sph", "c.sph", ""), ("in/d.htk", "d.htk", ""),
                   ("in/sub/b.FLAC", "sub/b.FLAC", ""), ("other/g.mp3", "other/g.mp3", "")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        batch.discover([tmp_path / "missing.wav"])


def test_shard_partitions_items_and_checks_its_range(tmp_path):
    from dcasenet_hub import batch

    for i in range(20):
        (tmp_path / f"f{i}.wav").write_bytes(b"x")
    items = batch.discover([tmp_path])
    parts = [batch.shard(items, k, 3) for k in (1, 2, 3)]
    assert sorted(i.rel.as_posix() for p in parts for i in p) == sorted(i.rel.as_posix() for i in items)
    assert all(parts) and sum(map(len, parts)) == 20  # disjoint and none empty for 20 names
    with pytest.raises(ValueError, match="1 <= I <= N"):
        batch.shard(items, 4, 3)
    assert batch.parse_shard("2/8") == (2, 8)


def test_batch_run_from_python_writes_the_cli_folder_and_resumes(mixed_folder, tmp_path, authors_checkpoint):
    from dcasenet_hub import batch
    from dcasenet_hub.batch.index import read_index

    out = tmp_path / "lib"
    report = batch.run(str(authors_checkpoint), [mixed_folder], out, task="embed", workers=0)
    assert (report.done, report.skipped, len(report.failed)) == (2, 0, 4)
    assert report.index_path == out / "index.csv"
    assert repr(report) == f"Report(embed, 6 inputs: 2 done, 0 skipped, 4 failed; index {out / 'index.csv'})"
    rows = {Path(r["input"]).name: r["status"] for r in read_index(out / "index.csv")}
    assert rows == {"a.wav": "ok", "b.flac": "ok", "bad.wav": "failed", "empty.wav": "failed",
                    "nan.wav": "failed", "short.wav": "failed"}
    loads = []

    def load(name):
        loads.append(name)
        raise AssertionError("complete outputs must not load the model")

    # the good files again (loose files keep their paths relative to their common parent: the same outputs)
    again = batch.run(str(authors_checkpoint), [mixed_folder / "a.wav", mixed_folder / "sub" / "b.flac"], out,
                      task="embed", load=load)
    assert (again.done, again.skipped, again.failed) == (0, 2, []) and loads == []
    assert len(read_index(out / "index.csv")) == 6  # the earlier run's rows for the other inputs stay
    cli = tmp_path / "cli"
    assert main(["embed", str(mixed_folder), "-o", str(cli), "--model", str(authors_checkpoint), "--quiet"]) == 1
    for name in ("a.npz", "sub/b.npz"):
        with np.load(out / name) as x, np.load(cli / name) as y:
            np.testing.assert_array_equal(x["clip"], y["clip"])
            assert json.loads(str(x["meta"])) == json.loads(str(y["meta"]))  # same resume record


def test_dtype_and_device_errors_come_from_devices_as_usage_errors(tmp_path, authors_checkpoint, capsys):
    sf.write(tmp_path / "x.wav", _tone(0.3, 24000, 1), 24000)
    rc = main(["embed", str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), "--model", str(authors_checkpoint),
               "--device", "tpu:0"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "dcasenet-hub embed: error: --device tpu:0: 'tpu:0' is not a device; use auto, cpu, cuda, cuda:N or mps"
    assert not (tmp_path / "o").exists()


def test_embed_folder_example_uses_discover(mixed_folder, tmp_path, authors_checkpoint):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "examples" / "embed_folder.py"), str(mixed_folder), "-o",
                           str(tmp_path / "emb"), "--model", str(authors_checkpoint)],
                          capture_output=True, text=True, cwd=repo, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path / "emb").as_posix() for p in (tmp_path / "emb").rglob("*.npz")) == [
        "a.npz", "sub/b.npz"]
    assert "cosine similarity" in proc.stdout
