"""Issue 12: resume trusts only complete, consistent outputs of the same weights; a kill loses at most the files in
flight (content fingerprint of the model, output digests, stale temp files, appended index rows, SIGKILL)."""

from __future__ import annotations

import csv
import json
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


def test_weights_copied_over_the_model_folder_are_not_resumed_as_complete(tmp_path, v3_model, responsive_v3):
    from dcasenet_hub.hub import save_pretrained
    from dcasenet_hub.inference import embed

    audio = _folder(tmp_path / "in", 1, seconds=2.0)
    old, new = tmp_path / "model", tmp_path / "new"
    save_pretrained(v3_model, old)
    save_pretrained(responsive_v3, new)
    out = tmp_path / "out"
    args = ["embed", str(audio), "-o", str(out), "--model", str(old), "--quiet"]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in (old, old / "model.safetensors")}
    folder_stat = old.stat()
    shutil.copyfile(new / "model.safetensors", old / "model.safetensors")  # `cp new/model.safetensors model/`
    assert (old.stat().st_size, old.stat().st_mtime_ns) == (folder_stat.st_size, folder_stat.st_mtime_ns)
    assert before  # the folder's size and date did not change: only the content tells
    assert main(args) == 0
    assert [r["status"] for r in _rows(out / "index.csv")] == ["ok"]  # recomputed, not "skipped"
    with np.load(out / "f0.npz") as z:
        np.testing.assert_allclose(z["frame"], embed(responsive_v3, audio / "f0.wav").frame, atol=1e-5)
        assert len(json.loads(str(z["meta"]))["model_sha256"]) == 64
    assert main(args) == 0  # same weights again: complete
    assert [r["status"] for r in _rows(out / "index.csv")] == ["skipped"]


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
