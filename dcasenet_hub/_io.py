"""Small file helpers shared by the package: atomic, durable writes and the cleaning of stale temporary files.

Temporary files are named ``.<name>.dcasenet-hub-<pid>-<host>.<random>.tmp`` next to their target, so a later run can
tell this tool's leftovers from anything else and remove only those whose process is gone
(:func:`clean_stale_temp_files`).

Fault injection for tests (inert unless set): with ``DCASENET_HUB_TEST_KILL_AFTER=N`` the process sends itself
SIGKILL right after its N-th atomic rename; with ``DCASENET_HUB_TEST_KILL_BEFORE=N`` right before it (the complete,
fsync'd temporary file is left behind). Every :func:`atomic_write` of the process counts, in order.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from dcasenet_hub._env import kill_at_rename

#: Tag in the names of this tool's temporary files.
TMP_TAG = "dcasenet-hub"
_TMP_RE = re.compile(r"^\..+\." + re.escape(TMP_TAG) + r"-(\d+)-([A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp$")
_renames = 0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _test_kill(when: str) -> None:
    """SIGKILL this process at the N-th atomic rename when a fault-injection variable asks for it (tests only)."""
    want = kill_at_rename(when)
    if want is not None and want == _renames + (1 if when == "BEFORE" else 0):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open folders; the file itself was synced
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)``, fsync the temporary file, rename it onto ``path`` and fsync the folder.

    The temporary file lives in the same folder, so the rename is atomic: readers see either the old file or the
    complete new one, never a half-written file; after a crash or power loss the new name holds complete data.
    """
    global _renames
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TMP_TAG}-{os.getpid()}-{_host()}.", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        _fsync(tmp_path)
        _test_kill("BEFORE")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _renames += 1
    _fsync(path.parent, directory=True)
    _test_kill("AFTER")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Remove this tool's temporary files under ``folder`` left by processes that are gone (e.g. SIGKILL).

    Only names of the :func:`atomic_write` pattern, made on this host by a process id that is no longer alive, are
    removed: a concurrent run (another shard into the same folder) keeps its files in flight. Files of other hosts
    (a shared network folder) are left alone.

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    host = _host()
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            m = _TMP_RE.match(name)
            if m is None or m.group(2) != host or _pid_alive(int(m.group(1))):
                continue
            p = Path(dirpath) / name
            try:
                p.unlink()
            except FileNotFoundError:  # another run cleaned it first
                continue
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


#: Kept free beyond what a write needs: file-system metadata, logs and the other outputs of the same run.
FREE_SPACE_MARGIN = 64 * 1024 * 1024


def check_free_space(folder: Path, needed: int, *, what: str) -> None:
    """Raise :class:`~dcasenet_hub.errors.DiskSpaceError` if ``folder`` has less than ``needed`` bytes free.

    ``what`` names the write (``"downloading X"``) in the one-line message, which also says how much is needed and
    free, and the fix. The check keeps :data:`FREE_SPACE_MARGIN` extra.

    Example:
        >>> check_free_space(Path("."), 1, what="writing one byte")
    """
    import shutil

    from dcasenet_hub.errors import DiskSpaceError

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:  # the folder may not exist yet: ask its parent's disk
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + FREE_SPACE_MARGIN > free:
        raise DiskSpaceError(
            f"{what}: needs {_mib(needed)} in {folder} but only {_mib(free)} is free (keeping {_mib(FREE_SPACE_MARGIN)} "
            "spare); free some space or choose a destination on another disk, then run the command again")


def _mib(n: int) -> str:
    if n < 2**20:
        return f"{n:,} bytes"
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"
