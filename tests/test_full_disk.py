"""Commands that write on a full disk or into a read-only folder: one line naming the file, the problem and what to
do, and nothing half-written left behind. The disk is a real one: a tiny tmpfs (or a read-only bind mount), mounted in
a private mount namespace of the command's own process (``unshare``), so it goes away with it; where this process may
not mount (not root), the tests cannot run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 24000
#: Runs a command on a tmpfs of $1 KiB mounted at $0, then lists what it left on it after a marker line.
_ON_SMALL_DISK = 'mount -t tmpfs -o size="$1"k tmpfs "$0" && shift && "$@"; rc=$?; echo "--- left:"; ' \
                 'find "$0" -mindepth 1 | sort; exit $rc'


def _unshare(*mount: str) -> list[str]:
    """The command prefix that runs a command in a private mount namespace, once ``mount ARGS`` has been seen to
    work in one; skips the test where it does not (not root, no unshare)."""
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    if shutil.which("unshare") is None or subprocess.run([*unshare, "mount", *mount], capture_output=True).returncode:
        pytest.skip("needs a private mount namespace (unshare, as root) to mount a small or read-only disk")
    return unshare


def _on_a_small_disk(tmp_path: Path, kib: int, *args: str) -> tuple[int, str, list[str]]:
    """Run ``dcasenet-hub ARGS`` with ``tmp_path / "disk"`` a tmpfs of ``kib`` KiB; returns the exit code, stderr and
    the paths it left on that disk (relative to it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = _unshare("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk))
    cmd = [*unshare, "sh", "-c", _ON_SMALL_DISK, str(disk), str(kib), sys.executable, "-m", "dcasenet_hub.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    left = proc.stdout.split("--- left:\n", 1)[1].split()
    return proc.returncode, proc.stderr, [str(Path(p).relative_to(disk)) for p in left]


def _sounds(root: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    for kind, make in (("low", lambda: np.sin(2 * np.pi * rng.uniform(140, 160) * t)),
                       ("noise", lambda: rng.standard_normal(t.size))):
        (root / kind).mkdir(parents=True)
        for i in range(8):
            x = make()
            sf.write(root / kind / f"{kind}_{i}.wav", (0.3 * x / np.abs(x).max()).astype(np.float32), SR)
    return root


def _error_line(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"dcasenet-hub {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_finetune_on_a_full_disk_names_the_state_file_and_resume(authors_checkpoint: Path, tmp_path: Path) -> None:
    """The epoch's state does not fit: torch's own file writer would call that an unexpected RuntimeError (exit 4)."""
    code, stderr, left = _on_a_small_disk(
        tmp_path, 512, "finetune", str(_sounds(tmp_path / "sounds")), "--task", "scene", "--base",
        str(authors_checkpoint), "-o", str(tmp_path / "disk" / "ft"), "--freeze", "conv_block4", "--epochs", "1",
        "--batch-size", "4", "--crop", "0.8", "-q")
    line = _error_line(stderr, "finetune")
    assert code == 2, stderr
    assert "No space left on device" in line and "ft/finetune-state.partial.pt" in line, line
    assert "the disk is full" in line and "--resume" in line, line
    assert not [p for p in left if p.endswith(".tmp")], left  # the half-written state is removed


def test_convert_on_a_full_disk_says_so_and_leaves_no_folder(authors_checkpoint: Path, tmp_path: Path) -> None:
    """The 56 MB of weights do not fit: the folder the command created goes again, and the line says what to do."""
    code, stderr, left = _on_a_small_disk(tmp_path, 1024, "convert", str(authors_checkpoint), "-o",
                                          str(tmp_path / "disk" / "converted"))
    line = _error_line(stderr, "convert")
    assert code == 2, stderr
    assert "No space left on device" in line and "the disk is full: free space on it" in line, line
    assert left == [], left


def test_embed_of_one_file_on_a_full_disk_says_so_and_leaves_nothing(authors_checkpoint: Path, tmp_path: Path) -> None:
    """``-o FILE`` fails like a folder run's input (exit 1), with the same fix."""
    clip = tmp_path / "ten_seconds.wav"  # its embeddings take about 30 KB
    sf.write(clip, (0.1 * np.random.default_rng(0).standard_normal(10 * SR)).astype(np.float32), SR)
    code, stderr, left = _on_a_small_disk(tmp_path, 16, "embed", str(clip), "--model", str(authors_checkpoint), "-o",
                                          str(tmp_path / "disk" / "ten_seconds.npz"))
    line = _error_line(stderr, "embed")
    assert code == 1, stderr
    assert "ten_seconds.npz" in line and "the disk is full: free space on it (or write to another disk)" in line, line
    assert left == [], left


def test_a_folder_run_into_a_read_only_folder_of_finished_outputs_is_one_line(authors_checkpoint: Path,
                                                                               tmp_path: Path) -> None:
    """Every write failing on its own gave three to eight `error:` lines naming lock and journal files."""
    clip = tmp_path / "a.wav"
    sf.write(clip, (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32), SR)
    out = tmp_path / "out"
    model = ["--model", str(authors_checkpoint)]
    subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", "embed", str(clip), "-o", str(out), *model, "-q"],
                   check=True, capture_output=True)
    unshare = _unshare("--bind", str(out), str(out))
    read_only = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    for extra in ([], ["--overwrite"]):
        proc = subprocess.run([*unshare, "sh", "-c", read_only, str(out), sys.executable, "-m", "dcasenet_hub.cli",
                               "embed", str(clip), "-o", str(out), *model, *extra], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert _error_line(proc.stderr, "embed") == (f"dcasenet-hub embed: error: cannot write into the output "
                                                     f"folder {out} (Read-only file system); choose another output "
                                                     "folder (-o), or make it writable"), proc.stderr
        assert [line for line in proc.stderr.splitlines() if not line.startswith("WARNING ")] == [
            _error_line(proc.stderr, "embed")], proc.stderr
