"""The output folder's state under many writers, other working directories, odd names and environment faults.

One test per fault: two runs writing one folder at once, a folder used from another working directory, a manifest
id re-pointed to other weights, a name that is not UTF-8 (or holds a newline), a closed stderr, a full disk, an
unwritable cache, names near the file system's limit, temporary names with a newline, and permissions computed
without flipping the umask. The kill-storm over four writers is tests/test_output_folder_storm.py.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main


def _tone(seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32)


def _wav(path: Path, seed: int, seconds: float = 0.6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone(seconds, 16000, seed), 16000)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _events(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


# ----------------------------------------------------------------------------------------------------------------
# 1. two runs with different inputs writing one folder at once: both runs' inputs and events stay
# ----------------------------------------------------------------------------------------------------------------


def test_a_run_that_starts_and_ends_inside_another_keeps_both_runs_inputs_and_events(tmp_path, authors_checkpoint):
    from dcasenet_hub import batch
    from dcasenet_hub.cli.common import load_model

    first = [_wav(tmp_path / "one" / f"a{i}.wav", i) for i in range(2)]
    second = [_wav(tmp_path / "two" / f"b{i}.wav", 5 + i) for i in range(2)]
    out = tmp_path / "out"
    opts = batch.BatchOptions(task="predict", threshold=0.0, workers=0)  # threshold 0: every class is an event
    plan_a = batch.prepare(str(authors_checkpoint), first, out, opts)
    plan_b = batch.prepare(str(authors_checkpoint), second, out, opts)

    def load_while_b_runs(name: str):
        # run A has written its start of the index and is about to compute: run B starts, finishes, exits 0
        report = plan_b.execute(load=load_model)
        assert report.done == 2 and not report.failed
        return load_model(name)

    report = plan_a.execute(load=load_while_b_runs)
    assert report.done == 2 and not report.failed
    rows = {Path(r["input"]).name: r for r in _rows(out / "index.csv")}
    assert {k: r["status"] for k, r in rows.items()} == {"a0.wav": "ok", "a1.wav": "ok", "b0.wav": "ok",
                                                         "b1.wav": "ok"}
    merged = _events(out / "events.csv")
    expected = [r for name in ("a0", "a1", "b0", "b1") for r in _events(out / f"{name}.events.csv")]
    assert merged == expected and {r[0] for r in merged} == {"a0.wav", "a1.wav", "b0.wav", "b1.wav"}


# ----------------------------------------------------------------------------------------------------------------
# 2. the same folder from another working directory: one row per file, no lost events
# ----------------------------------------------------------------------------------------------------------------


def test_the_same_folder_used_from_another_working_directory_keeps_one_row_per_file(tmp_path, authors_checkpoint,
                                                                                   monkeypatch, caplog):
    here, there = tmp_path / "here", tmp_path / "there"
    _wav(here / "a.wav", 1)
    _wav(here / "b.wav", 2)
    there.mkdir()
    model = ["--model", str(authors_checkpoint), "--quiet", "--threshold", "0", "--workers", "0"]
    monkeypatch.chdir(here)
    assert main(["predict", "a.wav", "-o", "outx", *model]) == 0
    monkeypatch.chdir(there)
    with caplog.at_level("WARNING", logger="dcasenet_hub"):
        assert main(["predict", "../here/b.wav", "../here/a.wav", "-o", "../here/outx", *model]) == 0
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]
    out = here / "outx"
    rows = _rows(out / "index.csv")
    assert [r["input"] for r in rows] == [str(here / "a.wav"), str(here / "b.wav")]  # stable, absolute, once
    assert [r["output"] for r in rows] == ["a.json", "b.json"] and {r["status"] for r in rows} == {"ok"}
    assert {r[0] for r in _events(out / "events.csv")} == {"a.wav", "b.wav"}
    monkeypatch.chdir(tmp_path)  # a third spelling of the same files
    assert main(["predict", str(here / "." / "a.wav"), "here/b.wav", "-o", "here/outx", *model]) == 0
    assert _rows(out / "index.csv") == rows


# ----------------------------------------------------------------------------------------------------------------
# 3. resume compares the content of the weights loaded, never the model id's name
# ----------------------------------------------------------------------------------------------------------------


def test_a_manifest_id_repointed_to_other_weights_is_recomputed(tmp_path, monkeypatch, authors_checkpoint,
                                                                 v3_state_dict, capsys):
    import torch
    from helpers import (
        COMMIT,
        URL_PATH,
        LoopbackServer,
        fixture_entry,
        git_blob_sha1,
        write_manifest,
    )

    old = authors_checkpoint.read_bytes()
    other = {k: v.clone() for k, v in v3_state_dict.items()}
    bias = other["fc_ASC.bias"]
    bias += torch.linspace(-2, 2, bias.numel())  # the scene head changes: other weights, same shapes
    torch.save(other, tmp_path / "other.pt")
    new = (tmp_path / "other.pt").read_bytes()
    new_path = "weights/Joint/weights/best_ASC_v2.pt"
    audio = _wav(tmp_path / "in" / "a.wav", 1, seconds=1.0)
    out = tmp_path / "out"
    with LoopbackServer({URL_PATH: old, f"/Jungjee/DcaseNet/raw/{COMMIT}/{new_path}": new}) as server:
        monkeypatch.setenv("DCASENET_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("DCASENET_HUB_MIRROR", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        args = ["predict", str(audio), "-o", str(out), "--model", "fixture-v3", "--workers", "0"]
        monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(write_manifest(
            tmp_path / "m1.json", {"fixture-v3": fixture_entry(git_blob_sha1(old))})))
        assert main(args) == 0
        before = json.loads((out / "a.json").read_text())
        assert main(args) == 0 and "0 done, 1 already complete" in capsys.readouterr().err  # same weights
        # the same id, re-pointed to other weights (as docs/weights.md describes for air-gapped sites)
        monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(write_manifest(
            tmp_path / "m2.json", {"fixture-v3": fixture_entry(git_blob_sha1(new), path=new_path)})))
        assert main(args) == 0
        assert "1 done, 0 already complete" in capsys.readouterr().err
    after = json.loads((out / "a.json").read_text())
    assert after["meta"]["model"] == "fixture-v3" and after["meta"]["model_sha256"] != before["meta"]["model_sha256"]
    assert after["scene"]["probs"] != before["scene"]["probs"]  # the new weights' numbers, not the old ones'


# ----------------------------------------------------------------------------------------------------------------
# 4. names that are not UTF-8, or hold a newline: processed, named in the index, never abort the run
# ----------------------------------------------------------------------------------------------------------------


def test_names_that_are_not_utf8_or_hold_a_newline_are_processed_and_indexed(tmp_path, authors_checkpoint):
    src = tmp_path / "in"
    os.rename(_wav(src / "x.wav", 1), os.fsencode(src) + b"/caf\xe9.wav")  # a Latin-1 name: not UTF-8
    _wav(src / "two\nlines.wav", 2)
    _wav(src / "plain.wav", 3)
    out = tmp_path / "out"
    rc = main(["predict", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet",
               "--threshold", "0", "--workers", "0"])
    assert rc == 0
    rows = {r["input"]: r for r in _rows(out / "index.csv")}
    assert set(rows) == {str(src / "caf\\xe9.wav"), str(src / "two\nlines.wav"), str(src / "plain.wav")}
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert (out / os.fsdecode(b"caf\xe9.json")).is_file() and (out / "two\nlines.json").is_file()
    (out / "index.csv").read_bytes().decode("utf-8")  # the index stays UTF-8
    assert {r[0] for r in _events(out / "events.csv")} == {"caf\\xe9.wav", "two\nlines.wav", "plain.wav"}


def test_a_failed_input_with_a_newline_or_bytes_not_utf8_in_its_name_is_one_line_of_the_summary(
        tmp_path, authors_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad\nname.wav").write_bytes(b"not audio")
    _wav(src / "good.wav", 1)
    assert main(["embed", str(src), "-o", str(tmp_path / "out"), "--model", str(authors_checkpoint)]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  failed: ")]
    assert failed == [f"  failed: {src}/bad name.wav: not a readable audio file: it exists but could not be decoded "
                      "as audio (Format not recognised.); check that it really is audio and convert it to WAV or "
                      "FLAC (e.g. `ffmpeg -i FILE out.wav`), or leave it out"], failed
    latin1 = os.fsdecode(os.fsencode(src) + b"/caf\xe9.wav")
    Path(latin1).write_bytes(b"not audio")
    assert main(["embed", latin1, "-o", str(tmp_path / "one.npz"), "--model", str(authors_checkpoint)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1 and lines[0].startswith(f"dcasenet-hub embed: error: {src}/caf\\xe9.wav: not a "), lines
    assert "\udce9" not in lines[0]


# ----------------------------------------------------------------------------------------------------------------
# 5. a closed stderr or stdout never stops the work nor changes the exit code
# ----------------------------------------------------------------------------------------------------------------


def test_a_closed_stderr_does_not_stop_the_work(tmp_path, authors_checkpoint):
    for i in range(3):
        _wav(tmp_path / "in" / f"f{i}.wav", i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dcasenet_hub.cli", "embed", str(tmp_path / "in"), "-o", str(out), "--model",
           str(authors_checkpoint), "--workers", "0"]  # progress bars on (no --quiet)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stderr.close()  # `2>&1 | head -c 300` that has read enough: every later write gets EPIPE
    assert proc.wait(timeout=300) == 0
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok", "ok", "ok"]


def test_a_closed_stdout_does_not_change_the_exit_code():
    proc = subprocess.Popen([sys.executable, "-m", "dcasenet_hub.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `dcasenet-hub list | head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.parametrize("closed", ["2>&-", ">&-", ">&- 2>&- <&-"])
def test_a_command_started_with_closed_standard_streams_does_all_the_work(tmp_path, authors_checkpoint, closed):
    """`2>&-` leaves Python's sys.stderr None: the first log line used to end the run with exit 1 and no output."""
    for i in range(3):
        _wav(tmp_path / "in" / f"f{i}.wav", i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dcasenet_hub.cli", "embed", str(tmp_path / "in"), "-o", str(out), "--model",
           str(authors_checkpoint), "--workers", "0"]
    # the warning that the fixture's weights are marked untrained is the first line written to stderr
    proc = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *cmd], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok", "ok", "ok"]
    assert sorted(p.name for p in out.glob("*.npz")) == ["f0.npz", "f1.npz", "f2.npz"]


def test_sigterm_ends_a_folder_run_as_ctrl_c_does_and_a_rerun_finishes_it(tmp_path, authors_checkpoint):
    """A scheduler's time limit or `kill`: the index records what finished, one line says how to go on."""
    import signal
    import time

    n = 16
    for i in range(n):
        _wav(tmp_path / "in" / f"f{i:02d}.wav", i, seconds=2.0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dcasenet_hub.cli", "embed", str(tmp_path / "in"), "-o", str(out), "--model",
           str(authors_checkpoint), "--workers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # stopped first, so the signal arrives with inputs still to do, however fast the machine
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, err
    assert "dcasenet-hub embed: terminated; finished inputs are kept: rerun the same command" in err, err
    assert "Traceback" not in err
    rows = _rows(out / "index.csv")
    done = sorted(p.stem for p in out.glob("*.npz"))
    ok = {Path(r["input"]).stem for r in rows if r["status"] == "ok"}
    assert ok <= set(done) and len(set(done) - ok) <= 1, (ok, done)  # at most the one in flight is not recorded
    assert 0 < len(done) < n and {r["status"] for r in rows} == {"ok", "pending"}, rows
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n - len(done)} done, {len(done)} already complete" in rerun.stderr, rerun.stderr


# ----------------------------------------------------------------------------------------------------------------
# 9. a full disk fails the inputs with the path (exit 1); an unwritable cache exits 3 with the path and the fix
# ----------------------------------------------------------------------------------------------------------------


def test_a_full_disk_fails_the_inputs_naming_the_path_and_exits_1(tmp_path, authors_checkpoint, monkeypatch,
                                                                   capsys):
    for i in range(2):
        _wav(tmp_path / "in" / f"f{i}.wav", i)
    out = tmp_path / "out"
    real_fsync = os.fsync

    def fsync(fd):  # the disk of OUTDIR is full: data cannot be made durable there (as ext4/NFS report it)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc = main(["embed", str(tmp_path / "in"), "-o", str(out), "--model", str(authors_checkpoint), "--quiet",
               "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "2 failed" in err and "Traceback" not in err
    for i in range(2):
        assert f"No space left on device: '{out / f'f{i}.npz'}'" in err and "free space" in err
    assert f"cannot append to {out / '.dcasenet-hub' / 'journal'}" in err  # the folder's own record, by path
    assert not list(out.glob("*.npz")) and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["embed", str(tmp_path / "in"), "-o", str(out), "--model", str(authors_checkpoint), "--quiet"]) == 0


@pytest.mark.parametrize("command", ["download", "embed", "predict"])
def test_an_unwritable_cache_exits_3_naming_the_path_and_the_fix(tmp_path, monkeypatch, authors_checkpoint, capsys,
                                                                 command):
    from helpers import (
        URL_PATH,
        LoopbackServer,
        fixture_entry,
        git_blob_sha1,
        write_manifest,
    )

    data = authors_checkpoint.read_bytes()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's parent should be")  # so even root cannot write the cache
    cache = blocker / "cache"
    with LoopbackServer({URL_PATH: data}) as server:
        monkeypatch.setenv("DCASENET_HUB_CACHE", str(cache))
        monkeypatch.setenv("DCASENET_HUB_MIRROR", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(write_manifest(
            tmp_path / "m.json", {"fixture-v3": fixture_entry(git_blob_sha1(data))})))
        if command == "download":
            args = ["download", "fixture-v3"]
        else:
            args = [command, str(_wav(tmp_path / "a.wav", 1)), "-o", str(tmp_path / "out"), "--model", "fixture-v3"]
        rc = main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert str(cache) in err and "DCASENET_HUB_CACHE" in err and "Traceback" not in err


def test_one_file_commands_remove_what_killed_runs_into_the_same_file_left(tmp_path, authors_checkpoint):
    """A killed `export` leaves a temporary file the size of the graph; `-o FILE` runs left theirs for good, since
    only folder runs cleaned up. A live writer's file, and another target's, stay."""
    from dcasenet_hub._io import temp_prefix

    clip = _wav(tmp_path / "a.wav", 0)
    out = tmp_path / "out"
    out.mkdir()

    def leftover(name: str, pid: int) -> Path:
        path = out / (temp_prefix(name).replace(f"-{os.getpid()}-", f"-{pid}-") + "abcd1234.tmp")
        path.write_bytes(b"half")
        return path

    dead = 2 ** 22 + 12345  # above Linux's pid_max default: no such process
    stale = [leftover(name, dead) for name in ("x.npz", "x.json", "m.onnx", "x.png")]
    kept = [leftover("x.npz", os.getpid()), leftover("other.npz", dead)]
    model = ["--model", str(authors_checkpoint)]
    for args in (["embed", str(clip), "-o", str(out / "x.npz"), *model],
                 ["predict", str(clip), "-o", str(out / "x.json"), *model],
                 ["plot", str(clip), "-o", str(out / "x.png"), *model],
                 ["export", str(authors_checkpoint), "-o", str(out / "m.onnx"), "--no-check"]):
        assert main([*args, "--quiet"]) == 0, args
    assert [p.exists() for p in stale] == [False] * 4
    assert [p.exists() for p in kept] == [True, True]


@pytest.mark.parametrize("command, target, code, fix", [
    ("convert", "a_file/converted", 2, "a part of that path is a file, not a folder: choose another output (-o)"),
    ("export", "a_file/m.onnx", 2, "it is a file where a folder is needed: choose another output (-o)"),
    ("predict", "a_file/x.json", 1, "it is a file where a folder is needed: choose another output (-o)"),
    ("convert", "n" * 300, 2, "the name is too long for the file system: choose a shorter output name (-o)"),
])
def test_an_output_the_system_refuses_is_one_line_with_what_to_do(tmp_path, authors_checkpoint, capsys, monkeypatch,
                                                                   command, target, code, fix):
    """The system's own words ("[Errno 17] File exists: 'a_file'") said nothing about what to change."""
    monkeypatch.chdir(tmp_path)
    Path("a_file").write_text("a file, not a folder")
    args = {"convert": [str(authors_checkpoint)], "export": [str(authors_checkpoint), "--no-check"],
            "predict": [str(_wav(tmp_path / "a.wav", 0)), "--model", str(authors_checkpoint)]}[command]
    assert main([command, *args, "-o", target, "--quiet"]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1 and lines[0].startswith(f"dcasenet-hub {command}: error: "), lines
    assert lines[0].endswith(f"; {fix}"), lines


# ----------------------------------------------------------------------------------------------------------------
# 14. names near the file system's limit: a bounded temporary name; a documented shortened output name
# ----------------------------------------------------------------------------------------------------------------


def test_input_names_near_the_limit_are_processed_with_shortened_output_names(tmp_path, authors_checkpoint):
    NAME_MAX, SHORT_HASH_CHARS = 255, 16  # docs/outputs-reference.md: "Long names"

    src = tmp_path / "in"
    long225 = "a" * 221 + ".wav"  # its .npz fits; a temporary name that adds ~30 characters did not
    long254 = "b" * 250 + ".wav"  # its .events.csv would be 257 bytes
    near = "é" * 120 + ".wav"  # 244 bytes: the cut must not split a character
    for i, name in enumerate((long225, long254, near)):
        _wav(src / name, i)
    out = tmp_path / "emb"
    assert main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet"]) == 0
    assert (out / ("a" * 221 + ".npz")).is_file()
    pred = tmp_path / "pred"
    assert main(["predict", str(src), "-o", str(pred), "--model", str(authors_checkpoint), "--quiet",
                 "--threshold", "0"]) == 0
    rows = {Path(r["input"]).name: r for r in _rows(pred / "index.csv")}
    assert {r["status"] for r in rows.values()} == {"ok"}
    short = rows[long254]["output"]
    assert short.startswith("b" * 200) and short.endswith(".json") and "~" in short
    stem = short[: -len(".json")]
    assert len(stem.split("~")[1]) == SHORT_HASH_CHARS
    for suffix in (".json", ".events.csv", ".scores.tsv"):
        assert len((stem + suffix).encode()) <= NAME_MAX and (pred / (stem + suffix)).is_file()
    assert len((rows[near]["output"][: -len(".json")] + ".events.csv").encode()) <= NAME_MAX
    rows[near]["output"].encode("utf-8")  # cut at a character boundary
    assert {r[0] for r in _events(pred / "events.csv")} == {long225, long254, near}  # the full names
    again = subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", "predict", str(src), "-o", str(pred),
                            "--model", str(authors_checkpoint), "--threshold", "0"],
                           check=False, capture_output=True, text=True, timeout=300)
    assert "0 done, 3 already complete" in again.stderr  # the same shortened names again


# ----------------------------------------------------------------------------------------------------------------
# 15. temporary names: bounded, without newlines, and every one of them cleaned after a kill
# ----------------------------------------------------------------------------------------------------------------


def test_temporary_names_are_bounded_and_stale_ones_with_a_newline_are_cleaned(tmp_path):
    from dcasenet_hub import _io

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = _io.host_tag()
    stale = [tmp_path / f".a\nb.npz.{_io.TMP_TAG}-{gone.pid}-{host}.x1y2_abc.tmp",  # an older release's name
             tmp_path / f"{_io.temp_prefix('x' * 255)}abcd1234.tmp".replace(str(os.getpid()), str(gone.pid))]
    for p in stale:
        p.write_bytes(b"x")
    assert sorted(_io.clean_stale_temp_files(tmp_path)) == sorted(stale)
    for name in ("x" * 255, "two\nlines.npz", os.fsdecode(b"caf\xe9.npz")):
        prefix = _io.temp_prefix(name)
        assert len(prefix.encode("ascii")) + len("abcdefgh.tmp") < 160 and "\n" not in prefix
    target = tmp_path / ("y" * 250 + "\n.npz")
    _io.atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# ----------------------------------------------------------------------------------------------------------------
# fault injection lives in the tests: atomic writes read the umask once and never change it
# ----------------------------------------------------------------------------------------------------------------


def test_atomic_writes_never_change_the_umask_and_have_no_test_hooks(tmp_path, monkeypatch):
    from dcasenet_hub import _io

    expected = os.umask(0o022)
    os.umask(expected)
    _io.atomic_write_text(tmp_path / "first.txt", "x")  # the mode is known after the first write

    def umask(mask):  # another thread creating a file while the mask is flipped would get the wrong permissions
        raise AssertionError("atomic_write changed the process umask")

    monkeypatch.setattr(os, "umask", umask)
    monkeypatch.setenv("DCASENET_HUB_TEST_KILL_AFTER", "1")  # an old hook: must do nothing now
    for i in range(3):
        _io.atomic_write_text(tmp_path / f"f{i}.txt", "x")
    mode = (tmp_path / "f0.txt").stat().st_mode & 0o777
    assert mode == _io.file_mode() == 0o666 & ~expected


# ----------------------------------------------------------------------------------------------------------------
# a folder an older release wrote (index.csv without a journal) keeps its rows
# ----------------------------------------------------------------------------------------------------------------


def test_an_index_written_before_the_journal_keeps_its_rows(tmp_path, authors_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _wav(tmp_path / "in" / "a.wav", 1)
    _wav(tmp_path / "in" / "b.wav", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npz").write_bytes(b"an earlier run's output")
    (out / "index.csv").write_text("input,status,output,duration_s,error,warning\n"
                                   "in/a.wav,skipped,out/a.npz,0.600,,\n")  # the old form: relative to the cwd
    assert main(["embed", "in/b.wav", "-o", "out", "--model", str(authors_checkpoint), "--quiet"]) == 0
    rows = _rows(out / "index.csv")
    assert [(r["input"], r["status"], r["output"], r["duration_s"]) for r in rows] == [
        (str(tmp_path / "in" / "a.wav"), "ok", "a.npz", "0.600"), (str(tmp_path / "in" / "b.wav"), "ok", "b.npz",
                                                                   "0.600")]
