"""Four writers at once on one output folder (two shards, each started twice, from two working directories), killed
with SIGKILL at random instants, 20 rounds; then one more run leaves the folder a clean single run leaves, byte for
byte (index.csv, events.csv and every output file). docs/outputs-reference.md, "Many writers"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROUNDS = 20
HELPER = Path(__file__).with_name("storm_writers.py")


def _storm(tmp_path: Path, rounds: list[list[dict]]) -> list[list]:
    spec = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
    spec.write_text(json.dumps({"rounds": rounds}))
    done = subprocess.run([sys.executable, str(HELPER), str(spec)], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _files(out: Path) -> dict[str, bytes]:
    """Every file of an output folder but its journal state, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".dcasenet-hub" not in p.relative_to(out).parts}


@pytest.mark.integration
def test_four_writers_killed_at_random_then_one_run_equal_a_clean_single_run(tmp_path, authors_checkpoint):
    home, other = tmp_path / "A", tmp_path / "B"
    audio = home / "audio"
    (audio / "sub").mkdir(parents=True)
    other.mkdir()
    rng = np.random.default_rng(22)
    for i in range(10):
        seconds = 0.4 + 0.1 * i
        folder = audio / "sub" if i % 3 == 0 else audio
        t = np.arange(int(seconds * 16000)) / 16000
        wav = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
        sf.write(folder / f"f{i}.wav", wav.astype(np.float32), 16000)
    (audio / "bad.wav").write_bytes(b"not audio" * 50)  # a failed row too

    common = ["--model", str(authors_checkpoint), "--workers", "0", "--batch-size", "1", "--threshold", "0.1",
              "--quiet"]
    from_home = ["predict", "audio", "-o", "out", *common]
    from_other = ["predict", "../A/audio", "-o", "../A/out", *common]

    [[code]] = _storm(tmp_path, [[{"cwd": str(home), "args": ["predict", "audio", "-o", "ref", *common],
                                   "kill_after_s": None}]])
    assert code == 1  # bad.wav failed, the others are written

    rounds = []
    for _ in range(ROUNDS):
        round_ = []
        for shard in ("1/2", "2/2"):
            for cwd, args in ((home, from_home), (other, from_other)):
                kill = None if rng.random() < 0.2 else float(rng.uniform(0.0, 1.6))
                round_.append({"cwd": str(cwd), "args": [*args, "--shard", shard], "kill_after_s": kill})
        rounds.append(round_)
    statuses = _storm(tmp_path, rounds)
    killed = sum(s == "killed" for r in statuses for s in r)
    assert len(statuses) == ROUNDS and killed >= ROUNDS  # the kills really land (most writers die mid-run)
    out = home / "out"
    written = len(list(out.rglob("*.json")))
    left = len(list(out.rglob("*.tmp"))) + len(list((out / ".dcasenet-hub" / "journal").glob("*.jsonl")))
    assert written > 0  # the writers did work before the final run (not only killed while starting)

    [[code]] = _storm(tmp_path, [[{"cwd": str(other), "args": from_other, "kill_after_s": None}]])
    assert code == 1
    ref, got = _files(home / "ref"), _files(out)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert got[name] == ref[name], name
    assert not list((out / ".dcasenet-hub" / "journal").iterdir())  # every writer's records folded in
    rows = (out / "index.csv").read_text().splitlines()
    assert len(rows) == 1 + 11 and len(set(rows)) == len(rows)  # every input exactly once
    print(f"storm: {ROUNDS} rounds, {killed} of {4 * ROUNDS} writers killed; before the final run {written} of 10 "
          f"inputs complete, {left} temporary files and journals of killed writers")
