"""Non-regular files (a FIFO, /dev/zero) given as a model, a manifest or an input are refused at once, with one
line; and the messages of inputs that fail say what is true (duration, emptiness). The fixture weights are test
weights, not pretrained ones."""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main

SR = 24000


def _in_time(fn: Any, *args: Any, seconds: float = 120.0) -> Any:
    """``fn(*args)`` in a thread that must finish within ``seconds`` (a FIFO read blocks forever)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: it blocks on the non-regular file"
    return out[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    return path


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "ok.wav"
    sf.write(path, (np.random.default_rng(0).standard_normal(SR) * 0.1).astype(np.float32), SR)
    return path


@pytest.fixture
def model_dir(v3_model, tmp_path: Path) -> Path:
    return v3_model.save_pretrained(tmp_path / "model")


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_non_regular_model_is_refused_at_once_with_exit_3(kind: str, fifo: Path, wav: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --model /dev/zero or a FIFO hung (read to fingerprint it before anything checked what it is)."""
    model = str(fifo) if kind == "fifo" else kind
    rc = _in_time(main, ["embed", str(wav), "--model", model, "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and "\n" not in err
    assert ("is a FIFO" if kind == "fifo" else "is a character device") in err and "not a model file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_non_regular_model_is_refused_by_the_library_folder_job(kind: str, fifo: Path, wav: Path,
                                                                   tmp_path: Path) -> None:
    """Before: batch.prepare/run read the model's bytes to fingerprint them for resume before any check, and hung."""
    from dcasenet_hub.batch import prepare
    from dcasenet_hub.errors import ModelFileError

    model = str(fifo) if kind == "fifo" else kind

    def call() -> BaseException | None:
        try:
            prepare(model, [wav], tmp_path / "out")
        except ModelFileError as exc:
            return exc
        return None

    exc = _in_time(call)
    assert exc is not None and "not a model file" in str(exc)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_non_regular_manifest_is_refused_with_one_line(kind: str, fifo: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Before: DCASENET_HUB_MANIFEST=/dev/zero ended in a MemoryError traceback; a FIFO blocked."""
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(fifo) if kind == "fifo" else kind)
    rc = _in_time(main, ["list"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and "Traceback" not in err
    assert "Cannot read weights manifest" in err and "not a regular file" in err


def _index(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "index.csv", newline="") as fh:
        return {Path(r["input"]).name: r for r in csv.DictReader(fh)}


def test_a_fifo_input_fails_at_once_naming_what_it_is_and_the_others_are_processed(
        model_dir: Path, fifo: Path, wav: Path, tmp_path: Path) -> None:
    """Before: a FIFO input "is empty (0 bytes)"."""
    out = tmp_path / "out"
    rc = _in_time(main, ["embed", str(fifo), str(wav), "--model", str(model_dir), "-o", str(out), "-q"])
    assert rc == 1
    rows = _index(out)
    assert rows["ok.wav"]["status"] == "ok"
    assert rows["pipe.wav"]["status"] == "failed" and "is a FIFO, not a regular file" in rows["pipe.wav"]["error"]
    assert "empty" not in rows["pipe.wav"]["error"]


def test_failed_inputs_say_their_true_duration(model_dir: Path, tmp_path: Path) -> None:
    """Before: 2399 samples at 24 kHz (99.96 ms) were "too short (100.0 ms); at least 100 ms", and a FLAC that
    failed to decode recorded its header's claimed 36000 s as duration_s."""
    short = tmp_path / "short.wav"
    sf.write(short, np.full(2399, 0.1, np.float32), SR)
    good = tmp_path / "good.flac"
    sf.write(good, (np.random.default_rng(0).standard_normal(2 * SR) * 0.1).astype(np.float32), SR)
    data = bytearray(good.read_bytes())
    # STREAMINFO's 36-bit total-samples field claims 10 hours; the middle of the frames is zeroed (no sync)
    field = int.from_bytes(data[18:26], "big")
    data[18:26] = ((field & ~((1 << 36) - 1)) | (36000 * SR)).to_bytes(8, "big")
    data[len(data) // 2:len(data) // 2 + 200] = bytes(200)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert main(["embed", str(short), str(bad), "--model", str(model_dir), "-o", str(out), "-q"]) == 1
    rows = _index(out)
    assert rows["short.wav"]["status"] == "failed"
    assert "too short (99.95 ms); at least 100 ms" in rows["short.wav"]["error"]
    assert rows["bad.flac"]["status"] == "failed" and rows["bad.flac"]["duration_s"] == ""
