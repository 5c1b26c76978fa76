"""Model folders written as one unit: after a kill at any instant a folder holds the complete old model or the
complete new one, never a mix.

The rule (docs/weights.md, "Model folders"):

1. A writer stages every new file in ``<folder>/.dcasenet-hub-staging-<host>-<pid>-<random>/``, each file fsync'd,
   then the staging folder.
2. It renames the staging folder to ``<folder>/.dcasenet-hub-commit``: this one rename is the commit point.
3. It moves each committed file onto its name (``os.replace``) and removes the empty commit folder.

Before step 2 the folder's files are the old model (a staging folder is invisible to readers and removed by the next
writer once its process is gone); from step 2 on, every reader first finishes step 3 (:func:`settle`), or, where it
may not write, reads each file from the commit folder when it is there (:func:`current_file`), so it sees the new
model. Two writers at once are serialised by step 2: the second waits until the first commit folder is gone.

Example:
    >>> import tempfile
    >>> d = write_files(Path(tempfile.mkdtemp()) / "m", {"a.txt": b"1", "b.txt": b"2"})
    >>> sorted(p.name for p in d.iterdir()), current_file(d, "a.txt").read_bytes()
    (['a.txt', 'b.txt'], b'1')
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from dcasenet_hub._io import fsync_path, pid_alive

#: The commit folder inside a model folder (present only between the commit and the end of the moves).
COMMIT_DIR = ".dcasenet-hub-commit"
#: Prefix of a writer's staging folder inside a model folder.
STAGING_PREFIX = ".dcasenet-hub-staging-"
#: Files moved first when a commit is applied: the weights before the config that records their hash.
_FIRST = ("model.safetensors",)
#: How long a writer waits for another writer's commit to be applied before it applies it itself (seconds).
_COMMIT_WAIT_S = 30.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def current_file(folder: Path, name: str) -> Path:
    """The file ``name`` of model folder ``folder`` as committed: from a commit not yet applied, else the folder's.

    Readers that cannot write (a read-only copy) use this instead of :func:`settle`.
    """
    staged = Path(folder) / COMMIT_DIR / name
    return staged if staged.is_file() else Path(folder) / name


def settle(folder: Path) -> bool:
    """Finish a commit a killed writer left in ``folder`` (step 3) and remove its dead writers' staging folders.

    Returns:
        True when the folder is settled; False when it could not be written (then read it with
        :func:`current_file`).
    """
    folder = Path(folder)
    try:
        _apply(folder)
        _remove_dead_staging(folder)
    except OSError:
        return False
    return True


def write_files(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``folder`` as one unit (the rule above); other files are kept.

    Returns:
        The folder.
    """
    folder = Path(folder)
    for name in files:
        if not name or "/" in name or os.sep in name or name in (".", "..") or name.startswith(".dcasenet-hub-"):
            raise ValueError(f"{name!r} cannot be a file of a model folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    settle(folder)
    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host()}-{os.getpid()}-", dir=folder))
        for name, data in files.items():
            with open(staging / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(staging, 0o755)
        fsync_path(staging, directory=True)
        _commit(staging, folder)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created:  # a folder this write made goes again (a full disk), unless another writer's files are in it
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _apply(folder)
    return folder


def copy_folder(src: Path, dst: Path) -> Path:
    """Copy the files of model folder ``src`` (as committed) into ``dst`` as one unit (:func:`write_files`)."""
    src = Path(src)
    settle(src)
    names: set[str] = set()
    for where in (src, src / COMMIT_DIR):  # a commit that could not be finished (read-only) still counts
        if where.is_dir():
            names |= {f.name for f in where.iterdir() if f.is_file() and not f.name.startswith(".dcasenet-hub-")}
    return write_files(dst, {name: current_file(src, name).read_bytes() for name in sorted(names)})


def _commit(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to the commit folder (step 2), after any commit of another writer has been applied."""
    deadline = time.monotonic() + _COMMIT_WAIT_S
    while True:
        try:
            os.rename(staging, folder / COMMIT_DIR)
            break
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if time.monotonic() > deadline:  # its writer is gone or stuck: apply its commit, then ours
            _apply(folder)
        time.sleep(0.01)
    fsync_path(folder, directory=True)


def _apply(folder: Path) -> None:
    """Move every file of the commit folder onto its name, then remove the commit folder (step 3; idempotent)."""
    commit = folder / COMMIT_DIR
    try:
        names = sorted(os.listdir(commit), key=lambda n: (n not in _FIRST, n))
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.replace(commit / name, folder / name)
        except FileNotFoundError:  # another reader or the writer moved it first
            continue
    fsync_path(folder, directory=True)
    try:
        os.rmdir(commit)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a next writer's commit already took its place
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def _remove_dead_staging(folder: Path) -> None:
    """Remove staging folders of this host's writers whose process is gone (killed before their commit)."""
    prefix = f"{STAGING_PREFIX}{_host()}-"
    for entry in os.scandir(folder):
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
