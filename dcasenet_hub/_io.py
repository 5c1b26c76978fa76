"""Small file helpers shared by the package: atomic, durable writes and the cleaning of stale temporary files.

Temporary files are named ``.<stem>.dcasenet-hub-<pid>-<host>.<random>.tmp`` next to their target, where ``<stem>``
is at most :data:`TMP_STEM_CHARS` characters of the target's name with anything but ``A-Z a-z 0-9 . _ -`` replaced
by ``_``: the name stays well under the file system's 255-byte limit whatever the target is called (a target name
at the limit still gets a temporary name), holds no newline or undecodable byte, and a later run can tell this
tool's leftovers from anything else and remove only those whose process is gone (:func:`clean_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Tag in the names of this tool's temporary files.
TMP_TAG = "dcasenet-hub"
#: Characters of the target's name kept in a temporary name.
TMP_STEM_CHARS = 48
# DOTALL: a name with a newline (as older releases made from targets with one) is still recognised
_TMP_RE = re.compile(r"^\..*\." + re.escape(TMP_TAG) + r"-(\d+)-([A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp$", re.DOTALL)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_file_mode: int | None = None


def json_ready(x: Any) -> Any:
    """``x`` as standard JSON takes it: NaN and infinities become ``None`` (JSON has neither), numpy arrays and
    scalars become lists and Python numbers, mapping keys strings.

    Example:
        >>> json_ready({"er": float("nan"), "f1": [0.5, float("inf")]})
        {'er': None, 'f1': [0.5, None]}
    """
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy arrays and scalars, without importing numpy
        return json_ready(x.tolist())
    return x


def json_text(x: Any, *, indent: int | None = None) -> str:
    """``x`` as standard JSON text (:func:`json_ready`: NaN and infinities as ``null``): what every JSON file and
    JSON line the package writes holds.

    Example:
        >>> json_text({"er": float("nan")})
        '{"er": null}'
    """
    import json

    return json.dumps(json_ready(x), indent=indent, allow_nan=False)


def host_tag() -> str:
    """This machine's name as it appears in temporary and journal file names (``A-Z a-z 0-9 -``, 40 at most)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def temp_prefix(name: str) -> str:
    """The start of a temporary name for a target called ``name`` (bounded, ASCII, without separators).

    Example:
        >>> temp_prefix("a b.npz").startswith(".a_b.npz.dcasenet-hub-")
        True
    """
    return f"{_temp_stem(name)}{os.getpid()}-{host_tag()}."


def _temp_stem(name: str) -> str:
    return f".{_UNSAFE.sub('_', name[:TMP_STEM_CHARS])}.{TMP_TAG}-"


def _process_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it: done once per process, not per write
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file as ``open()`` would create it (``0o666`` less the umask), computed once."""
    global _file_mode
    if _file_mode is None:
        _file_mode = 0o666 & ~_process_umask()
    return _file_mode


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync a file, or a folder where the platform can open one (so a rename in it is durable)."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, file_mode())  # mkstemp makes 0600 files; give the usual permissions
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a write or fsync error (full disk) names no file
            exc.filename = str(path)
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_path(path.parent, directory=True)


#: The stat fields that stand for a file's content between two full hashes. The kernel sets ctime on every write,
#: metadata change or rename and users cannot set it, so while all four are unchanged the content is unchanged too.
STAMP_KEYS = ("size", "mtime_ns", "ino", "ctime_ns")
#: A file changed this shortly before its stat may change again within the same timestamp tick (1 s on some file
#: systems, 2 s on FAT) without its stamp moving: such a stamp is recorded without ctime and matches no later one.
RACY_NS = 2_000_000_000


def stat_stamp(st: os.stat_result) -> dict[str, int]:
    """The :data:`STAMP_KEYS` of ``st``."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}


def stat_now(path: str | Path) -> tuple[os.stat_result, bool]:
    """``os.stat`` of ``path`` and whether it changed within :data:`RACY_NS` before (its stamp cannot vouch yet).

    Example:
        >>> st, racy = stat_now(__file__)
        >>> sorted(stat_stamp(st)) == sorted(STAMP_KEYS)
        True
    """
    now = time.time_ns()
    st = os.stat(path)
    return st, st.st_ctime_ns > now - RACY_NS


def recorded_stamp(st: os.stat_result, racy: bool) -> dict[str, int | None]:
    """The stamp to record for ``st``: without ctime when ``racy`` (:func:`stat_now`), so that it matches no later
    stat and the next check hashes the file."""
    return {**stat_stamp(st), **({"ctime_ns": None} if racy else {})}


def stamp_matches(record: Any, st: os.stat_result) -> bool:
    """Whether ``record`` (a dict read back from a file) holds the stamp of ``st``: the content is then unchanged
    since the hash recorded with it."""
    return isinstance(record, dict) and {k: record.get(k) for k in STAMP_KEYS} == stat_stamp(st)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still be running (``True`` when that cannot be told)."""
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
    host = host_tag()
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            m = _TMP_RE.match(name)
            if m is None or m.group(2) != host or pid_alive(int(m.group(1))):
                continue
            p = Path(dirpath) / name
            try:
                p.unlink()
            except FileNotFoundError:  # another run cleaned it first
                continue
            removed.append(p)
    return removed


def clean_stale_temp_files_of(path: Path) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it (as :func:`clean_stale_temp_files`
    does for a folder, for one target; the folder is not walked).

    Returns:
        The removed paths.
    """
    path = Path(path)
    stem, host = _temp_stem(path.name), host_tag()
    removed: list[Path] = []
    try:
        entries = [e.name for e in os.scandir(path.parent) if e.name.startswith(stem)]
    except OSError:  # no folder yet, or one that cannot be listed: nothing of ours to remove
        return removed
    for name in entries:
        m = _TMP_RE.match(name)
        if m is None or m.group(2) != host or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):  # another run cleaned it first
            (path.parent / name).unlink()
            removed.append(path.parent / name)
    return removed


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk or an exhausted quota (ENOSPC, EDQUOT)."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out: ``MemoryError``, ``torch.OutOfMemoryError`` (CUDA and other
    accelerators), or a ``RuntimeError`` that says so (torch's CPU allocator: "can't allocate memory")."""
    import sys

    torch = sys.modules.get("torch")  # an error of torch's only exists once torch is imported
    if isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


#: What to do when memory ran out, added to the messages it causes.
OUT_OF_MEMORY_FIX = "out of memory: lower --batch-size (batch_size) or --workers, or free memory, then run it again"


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` into ``path`` through :func:`atomic_write`.

    Writing to a path itself, torch reports a full disk as an unexplained ``RuntimeError`` ("unexpected pos"). So it
    writes through a Python file object here, whose ``OSError`` (ENOSPC) is raised as it is, also where torch's
    closing of its archive raises that ``RuntimeError`` while the ``OSError`` propagates.

    Example:
        >>> atomic_torch_save(Path(tempfile.mkdtemp()) / "state.pt", {"epoch": 1})
    """
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as exc:
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise

    atomic_write(path, write)


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


def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"``, ... for the ``st_mode`` of something that is not a regular file."""
    import stat

    for test, words in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return "not a regular file"


def read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refused at once, before any read, when it is not a regular file.

    A FIFO is opened without blocking and a device is never read, so ``/dev/zero`` or a pipe cannot hang the
    caller or fill its memory.

    Raises:
        NotRegularFileError: a FIFO, device, socket or folder.
        OSError: missing or unreadable.
    """
    import stat

    from dcasenet_hub.errors import NotRegularFileError

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, file_kind(mode))
        return fh.read()


class FailSafeStream:
    """A text stream that never raises: once a write or flush fails (a closed pipe, ``| head``), it drops the rest.

    Progress bars and messages are for a person; a reader that went away must not stop the work or change its
    exit code. Everything else (``isatty``, ``encoding``, ``fileno`` ...) is the wrapped stream's.

    Example:
        >>> import io
        >>> s = io.StringIO(); s.close()
        >>> FailSafeStream(s).write("lost") == 4
        True
    """

    def __init__(self, stream: object) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)  # type: ignore[attr-defined]
            except (OSError, ValueError):  # EPIPE, EBADF; ValueError: I/O on a closed file
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()  # type: ignore[attr-defined]
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())  # type: ignore[attr-defined]
        except (OSError, ValueError, AttributeError):
            return False

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def fail_safe(stream: object) -> FailSafeStream:
    """``stream`` wrapped in a :class:`FailSafeStream` (itself if it already is one)."""
    return stream if isinstance(stream, FailSafeStream) else FailSafeStream(stream)
