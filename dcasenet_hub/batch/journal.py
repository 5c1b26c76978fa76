"""The output folder's shared state: one append-only journal per writer; ``index.csv`` and ``events.csv`` rebuilt.

Any number of processes may write one output folder at once and be killed at any instant; none rewrites what
another wrote. Each writer appends fsync'd whole JSON lines (``pending``, ``ok``, ``failed``) to its own
:class:`Journal` file (a kill cuts at most a dead writer's last line, which readers skip). :func:`rebuild`, under the
folder's lock, folds the journals into ``state.jsonl`` and writes ``index.csv`` and ``events.csv`` atomically from
it; every writer rebuilds when it starts and ends. An input is its absolute path (:func:`input_key`), and
its latest finished record counts (``pending`` only while there is none). The full rules: docs/outputs-reference.md,
"Many writers, one folder".

Example:
    >>> from dcasenet_hub.batch.journal import Journal, rebuild
    >>> j = Journal("pred/")                                                     # doctest: +SKIP
    >>> j.append([{"key": "/data/a.wav", "status": "ok", "output": "a.json"}])   # doctest: +SKIP
    >>> rows = rebuild("pred/", events=True, done=j)                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dcasenet_hub._io import atomic_write_text, file_mode, host_tag, pid_alive
from dcasenet_hub.batch.index import display, read_index, write_index, write_merged

logger = logging.getLogger(__name__)

#: Folder of the shared state inside an output folder (hidden: discovery skips it).
STATE_DIR = ".dcasenet-hub"
#: How long a writer waits for the folder's lock before it gives up (another writer holds it only to rebuild).
LOCK_TIMEOUT_S = 600.0

_JOURNAL_RE = re.compile(r"^(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)-[0-9a-f]+\.jsonl$")


def input_key(path: str | os.PathLike[str]) -> str:
    """What identifies an input: its absolute path with its folders resolved (``..`` and folder symlinks), whatever
    the cwd. A symlink to a file is its own input, the name it is found under: a git-annex file re-pointed to new
    content stays one input (recomputed, since its content changed), not a second input with the first's output.

    Example:
        >>> input_key("/data/./x/../a.wav")
        '/data/a.wav'
    """
    head, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(os.path.realpath(head), name)


def _state(out_dir: str | Path) -> Path:
    return Path(out_dir) / STATE_DIR


def output_lock(out_dir: str | Path) -> Any:
    """The lock a writer holds while it checks that an output is not another input's and replaces it.

    Two writers may plan one output name for two inputs before either has written it; the second to take the lock
    finds the first's result there (:func:`~dcasenet_hub.batch.resume.other_owner`) and fails its input instead of
    overwriting. It is not the folder's rebuild lock, so writing never waits for a rebuild.

    Example:
        >>> with output_lock("emb/"):                                            # doctest: +SKIP
        ...     pass
    """
    from filelock import FileLock

    state = _state(out_dir)
    state.mkdir(parents=True, exist_ok=True)
    return FileLock(str(state / "outputs.lock"), timeout=LOCK_TIMEOUT_S)


class Journal:
    """One writer's append-only record file in an output folder.

    Args:
        out_dir: The output folder (created if missing).

    Example:
        >>> j = Journal("emb/")                                                  # doctest: +SKIP
        >>> j.append([{"key": "/data/a.wav", "status": "pending"}])               # doctest: +SKIP
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.writer = f"{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = _state(out_dir) / "journal" / f"{self.writer}.jsonl"
        self._seq = 0

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records (dicts with ``key``, ``status``, ``output``, ``duration_s``, ``error``, ``warning``).

        One ``write`` of whole lines on a file only this writer appends to, then fsync: durable before it returns.

        Raises:
            OSError: the folder cannot be written (the message names the journal file).
        """
        lines = []
        for r in records:
            self._seq += 1
            rec = {**r, "t": time.time_ns(), "w": self.writer, "n": self._seq}
            lines.append(json.dumps(rec, ensure_ascii=True, allow_nan=False, sort_keys=True) + "\n")
        if not lines:
            return
        data = "".join(lines).encode("ascii")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot append to {self.path}: {exc.strerror or exc}") from None


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # a writer that finished removed it
        return []
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # the last line of a writer killed while appending
            continue
        if isinstance(rec, dict) and isinstance(rec.get("key"), str):
            out.append(rec)
    return out


def _rank(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec.get("status") != "pending", rec.get("t", 0), str(rec.get("w", "")), rec.get("n", 0))


def _alive(journal: Path) -> bool:
    """Whether the writer of a journal file may still append to it (its process lives, or is on another host)."""
    m = _JOURNAL_RE.match(journal.name)
    if m is None or m.group("host") != host_tag():
        return True
    return pid_alive(int(m.group("pid")))


def rebuild(out_dir: str | Path, *, events: bool, done: Journal | None = None,
            event_formats: Sequence[str] = ("dcase",), parquet: bool = False) -> list[dict[str, str]]:
    """Fold every writer's records into the folder's state and rewrite ``index.csv`` (and the merged files).

    Under the folder's lock: read ``state.jsonl`` and every journal, keep each input's record that counts, write
    them to ``state.jsonl`` (atomically), remove the journals whose writers are gone (and ``done`` 's, a writer that
    has finished), then write ``index.csv`` and, if ``events`` or the folder holds predictions, ``durations.tsv`` and
    the merged event files of ``event_formats`` (:func:`~dcasenet_hub.batch.index.write_merged`); with ``parquet``
    the embeddings' Parquet files.

    Args:
        out_dir: The output folder.
        events: Write the merged event files (a predict run) even if no input has predictions yet.
        done: The journal of the calling writer when it has finished (removed once folded in).
        event_formats: Merged event files to write (``"dcase"``: ``events.csv``; ``"raven"``).
        parquet: Also write the Parquet tables of an ``embed --format parquet`` folder.

    Returns:
        The index rows (dicts with :data:`~dcasenet_hub.batch.index.INDEX_COLUMNS`; ``output`` as a path under
        ``out_dir``), sorted by input.

    Raises:
        OSError: the folder cannot be written; filelock.Timeout: the lock was not free within
            :data:`LOCK_TIMEOUT_S`.
    """
    from filelock import FileLock

    out_dir = Path(out_dir)
    state = _state(out_dir)
    (state / "journal").mkdir(parents=True, exist_ok=True)
    with FileLock(str(state / "lock"), timeout=LOCK_TIMEOUT_S):
        journals = sorted((state / "journal").glob("*.jsonl"))
        finished = [j for j in journals if (done is not None and j == done.path) or not _alive(j)]
        best: dict[str, dict[str, Any]] = {}
        earlier = [] if (state / "state.jsonl").exists() else _from_old_index(out_dir)
        for rec in earlier:
            best[rec["key"]] = rec
        for path in [state / "state.jsonl", *journals]:
            for rec in _read_lines(path):
                old = best.get(rec["key"])
                if old is None or _rank(rec) > _rank(old):
                    best[rec["key"]] = rec
        records = _owned(sorted(best.values(), key=lambda r: (str(r.get("input") or r["key"]), r["key"])))
        atomic_write_text(state / "state.jsonl",
                          "".join(json.dumps(r, ensure_ascii=True, sort_keys=True) + "\n" for r in records))
        for j in finished:  # folded into state.jsonl; their writers append no more
            j.unlink(missing_ok=True)
        rows = [_row(r) for r in records]
        write_index(out_dir / "index.csv", rows)
        # the merged files read each output by its path
        located = [{**r, "output": str(out_dir / r["_output"]) if r["_output"] else ""} for r in rows]
        if (events or any(r["status"] == "ok" and r["output"].endswith(".json") for r in rows)
                or (out_dir / "durations.tsv").exists()):  # a predict folder, now perhaps without predictions
            write_merged(out_dir, located, tuple(event_formats), log_repairs=done is not None)
        if parquet:
            from dcasenet_hub.batch.tables import write_parquet

            write_parquet(out_dir, [{**r, "output": r["_output"]} for r in rows])  # outputs relative to OUTDIR
    return located


def _owned(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` less those whose output another input finished later.

    An input's output is taken over only once that input is gone (:func:`~dcasenet_hub.batch.resume.other_owner`):
    the old record would name a file that holds the other input's result, and list its events twice.
    """
    owner: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("status") == "ok" and rec.get("output"):
            held = owner.get(rec["output"])
            if held is None or _rank(rec) > _rank(held):
                owner[rec["output"]] = rec
    return [r for r in records if not (r.get("status") == "ok" and r.get("output") and owner[r["output"]] is not r)]


def _from_old_index(out_dir: Path) -> list[dict[str, Any]]:
    """Records for the rows of an ``index.csv`` written before the folder had a journal (older releases).

    Those rows named inputs and outputs relative to the working directory of their run; they are read as relative to
    this one (where they were almost always made), so a folder carried over keeps its rows. Any record of the journal
    replaces them (they are the oldest).
    """
    records = []
    base = out_dir.resolve()
    for row in read_index(out_dir / "index.csv"):
        output = row["output"]
        if output:
            try:
                output = Path(os.path.abspath(output)).resolve().relative_to(base).as_posix()
            except ValueError:  # not under OUTDIR: not one of its outputs
                output = ""
        status = "ok" if row["status"] == "skipped" else row["status"]
        records.append({"key": input_key(row["input"]), "input": os.path.abspath(row["input"]), "status": status,
                        "output": output if status == "ok" else "",
                        "duration_s": float(row["duration_s"]) if row["duration_s"] else None,
                        "error": row["error"], "warning": row["warning"], "t": 0, "w": "", "n": 0})
    return records


def _row(rec: dict[str, Any]) -> dict[str, str]:
    status = rec.get("status") or "pending"
    dur = rec.get("duration_s")
    return {"input": display(str(rec.get("input") or rec["key"])), "status": status,
            "output": display(str(rec.get("output") or "")) if status == "ok" else "",
            "duration_s": "" if dur is None else f"{float(dur):.3f}",
            "error": display(str(rec.get("error") or "")), "warning": display(str(rec.get("warning") or "")),
            "_output": str(rec.get("output") or "") if status == "ok" else ""}
