"""Scale-out on an existing engine: `torchrun --nproc_per_node 2 -m dcasenet_hub.cli embed ...` splits the inputs by
rank and leaves one folder whose outputs and merged index equal a single-process run's."""

from __future__ import annotations

import csv
import os
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def _rows(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["input"]: r for r in csv.DictReader(fh)}


@pytest.mark.integration
def test_torchrun_two_processes_equal_one(tmp_path, authors_checkpoint):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        sf.write(audio / f"f{i}.wav", (0.1 * rng.standard_normal(24000 + 4000 * i)).astype(np.float32), 24000)
    (audio / "bad.wav").write_bytes(b"not audio" * 20)
    args = [str(audio), "--model", str(authors_checkpoint), "-q", "--workers", "0"]
    single = subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", "embed", *args, "-o", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 1, single.stderr  # the bad file fails, the others are written
    env_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dcasenet_hub.cli", "embed", *args, "-o", str(tmp_path / "two")]
    two = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert "merged index" in two.stderr, two.stderr[-3000:]
    one_rows, two_rows = _rows(tmp_path / "one" / "index.csv"), _rows(tmp_path / "two" / "index.csv")
    assert set(one_rows) == set(two_rows) and len(two_rows) == 7  # every input once, from both processes
    by_writer: dict[str, set[str]] = {}  # the folder's state records which process wrote each input
    for line in (tmp_path / "two" / ".dcasenet-hub" / "state.jsonl").read_text().splitlines():
        rec = json.loads(line)
        by_writer.setdefault(rec["w"], set()).add(rec["key"])
    assert len(by_writer) == 2 and not set.intersection(*by_writer.values())  # both ranks worked, on disjoint inputs
    for key, row in one_rows.items():
        assert two_rows[key]["status"] == row["status"], key
    for i in range(6):
        a, b = np.load(tmp_path / "one" / f"f{i}.npz"), np.load(tmp_path / "two" / f"f{i}.npz")
        # equal up to float32 rounding (other batch partners and thread counts change summation order: ~1e-8)
        assert np.abs(a["frame"] - b["frame"]).max() <= 1e-6 and np.abs(a["clip"] - b["clip"]).max() <= 1e-6



def test_training_and_folder_jobs_read_torchrun_by_one_rule(monkeypatch):
    """Both users of torchrun's environment ask dcasenet_hub._env.torchrun: a half-set environment (no MASTER_ADDR)
    is one process for the trainer as for folder jobs, and a full one gives the folder job its shard."""
    from dcasenet_hub.batch.distributed import torchrun_shard
    from dcasenet_hub.train.distributed import init_distributed

    assert torchrun_shard() is None and init_distributed(None).world == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert torchrun_shard() is None and init_distributed(None).world == 1  # not started by torchrun
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert torchrun_shard() == (3, 4)


_WAITING_WORKER = """
import os, pathlib, sys, time

import torch

from dcasenet_hub.train.distributed import init_distributed

ranks = init_distributed("cpu")
pathlib.Path(sys.argv[1], f"rank{ranks.rank}.pid").write_text(str(os.getpid()))
if ranks.rank == 0:
    time.sleep(600)  # never reaches the barrier: rank 1 waits there
torch.distributed.barrier()
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process not yet reaped by its new parent is a zombie: not running)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.integration
def test_workers_end_soon_after_torchrun_is_killed(tmp_path):
    """torchrun SIGKILLed while one worker sleeps and the other waits at a barrier: both workers end within
    seconds, instead of waiting for the process group's timeout (hours).

    Broken variant caught: workers without the parent watch (dcasenet_hub._process.exit_with_parent) keep running.
    """
    import signal
    import time

    script = tmp_path / "worker.py"
    script.write_text(_WAITING_WORKER)
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            str(script), str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("rank*.pid"))) < 2:
            assert run.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in sorted(tmp_path.glob("rank*.pid"))]
        time.sleep(1.0)  # rank 1 is at the barrier
        assert all(_running(p) for p in pids)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(p) for p in pids), "workers still running 30 s after torchrun was killed"
    finally:
        for p in tmp_path.glob("rank*.pid"):
            if _running(int(p.read_text())):
                os.kill(int(p.read_text()), signal.SIGKILL)
        if run.poll() is None:
            run.kill()


@pytest.mark.parametrize("agent", [True, False])
def test_only_workers_of_torchrun_watch_their_parent(agent):
    """A process with the rank variables but not started by torchrun's agent (another launcher, which may detach on
    purpose) is left alone; torchrun's workers watch their parent.

    Broken variant caught: every process with torchrun's rank variables ended when its parent changed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    if agent:
        env["TORCHELASTIC_RUN_ID"] = "test"
    code = ("import threading; from dcasenet_hub._process import exit_with_parent; exit_with_parent(); "
            "print(sorted(t.name for t in threading.enumerate()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert ("dcasenet-hub-parent-watch" in out) is agent
