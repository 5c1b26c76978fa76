"""The output folder's ``index.csv`` (one row per input, cumulative over runs) and merged ``events.csv``.

Example:
    >>> from dcasenet_hub.batch.index import read_index
    >>> [r["status"] for r in read_index("emb/index.csv")]      # doctest: +SKIP
    ['ok', 'ok', 'failed']
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dcasenet_hub._io import atomic_write_text

logger = logging.getLogger(__name__)

#: Columns of ``index.csv``.
INDEX_COLUMNS = ("input", "status", "output", "duration_s", "error", "warning")
#: Header of the per-input and merged event lists (DCASE style).
EVENTS_COLUMNS = ("filename", "onset", "offset", "event_label")


def one_line(exc: BaseException | str) -> str:
    """An error as one line (for index rows and summaries); the exception's type name if it has no message."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_index(path: str | Path) -> list[dict[str, str]]:
    """Rows of an index file, one per input (its last row counts); ``[]`` if there is none or it is unreadable.

    Example:
        >>> rows = read_index("emb/index.csv")                    # doctest: +SKIP
        >>> rows[0]["input"], rows[0]["status"]                   # doctest: +SKIP
        ('corpus/a.wav', 'ok')
    """
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [{k: r.get(k) or "" for k in INDEX_COLUMNS} for r in csv.DictReader(fh) if r.get("input")]
        last: dict[str, dict[str, str]] = {}  # rows appended as inputs finish: an input's last row counts
        for r in rows:
            key = os.path.abspath(r["input"])
            last.pop(key, None)
            last[key] = r
        return list(last.values())
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        logger.warning("%s: cannot read the earlier index (%s); it is replaced", path, one_line(exc))
        return []


def write_index(path: str | Path, rows: Sequence[dict[str, str]]) -> None:
    """Write ``rows`` (dicts with :data:`INDEX_COLUMNS`) as an index file, atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INDEX_COLUMNS)
    w.writerows([r.get(k, "") for k in INDEX_COLUMNS] for r in rows)
    atomic_write_text(Path(path), buf.getvalue())


class IndexWriter:
    """The output folder's index: rows of earlier runs for other inputs, then this run's inputs (cumulative).

    :meth:`start` writes every row at once (this run's inputs ``pending``, ``skipped`` or ``failed``), :meth:`done`
    appends an input's final row as soon as its outputs are written (flushed and fsync'd, so a kill loses at most the
    inputs in flight) and :meth:`write` rewrites the file compacted, one row per input, at the end. Until then an
    input may have several rows: the last one counts (as :func:`read_index` reads them).

    Args:
        path: The index file.
        items: This run's :class:`~dcasenet_hub.batch.Item` s (their ``outputs`` already set).

    Example:
        >>> writer = IndexWriter(out / "index.csv", items)      # doctest: +SKIP
        >>> writer.start(); item.status = "ok"; writer.done(item); writer.write()   # doctest: +SKIP
    """

    def __init__(self, path: str | Path, items: Sequence[Any]) -> None:
        self.path = Path(path)
        self.items = list(items)
        inputs = {os.path.abspath(i.path) for i in self.items}
        outputs = {os.path.abspath(p) for i in self.items for p in i.outputs.values()}
        self.earlier = [r for r in read_index(self.path)
                        if os.path.abspath(r["input"]) not in inputs
                        and not (r["output"] and os.path.abspath(r["output"]) in outputs)]

    @staticmethod
    def row(item: Any) -> dict[str, str]:
        """An item's index row."""
        dur = "" if item.duration_s is None else f"{item.duration_s:.3f}"
        return {"input": str(item.path), "status": item.status or "pending",
                "output": item.output if item.status != "failed" else "", "duration_s": dur,
                "error": item.error, "warning": item.warning}

    def rows(self) -> list[dict[str, str]]:
        """All rows: earlier runs' (other inputs) then this run's."""
        return [*self.earlier, *(self.row(item) for item in self.items)]

    def start(self) -> None:
        """Write the whole index before any work (atomically)."""
        self.write()

    def done(self, item: Any) -> None:
        """Append ``item``'s final row and make it durable."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([self.row(item)[k] for k in INDEX_COLUMNS])
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def write(self) -> None:
        """Rewrite the index atomically, one row per input."""
        write_index(self.path, self.rows())


def write_all_events(path: str | Path, rows: Sequence[dict[str, str]]) -> None:
    """Concatenate the event lists of every complete input of index ``rows`` (this run's and earlier runs').

    Example:
        >>> write_all_events("pred/events.csv", read_index("pred/index.csv"))   # doctest: +SKIP
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENTS_COLUMNS)
    for row in rows:
        output = row.get("output", "")
        if row.get("status") not in ("ok", "skipped") or not output.endswith(".json"):
            continue
        events = Path(output[: -len(".json")] + ".events.csv")
        try:
            with open(events, encoding="utf-8", newline="") as fh:
                records = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            logger.warning("events.csv: skipping %s (%s)", events, one_line(exc))
            continue
        w.writerows(r for r in records[1:] if r)
    atomic_write_text(Path(path), buf.getvalue())
