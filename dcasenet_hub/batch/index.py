"""The output folder's ``index.csv`` (one row per input, every writer's), merged ``events.csv`` and
``durations.tsv``: written by :func:`~dcasenet_hub.batch.journal.rebuild` from the folder's journal.

Example:
    >>> from dcasenet_hub.batch.index import read_index
    >>> [r["status"] for r in read_index("emb/index.csv")]      # doctest: +SKIP
    ['ok', 'ok', 'failed']
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dcasenet_hub._io import atomic_write_text
from dcasenet_hub.inference.outputs import tsv_cell

logger = logging.getLogger(__name__)

#: Columns of ``index.csv``.
INDEX_COLUMNS = ("input", "status", "output", "duration_s", "error", "warning")
#: Header of the per-input and merged event lists (DCASE style).
EVENTS_COLUMNS = ("filename", "onset", "offset", "event_label")
#: Header of ``durations.tsv`` (sed_scores_eval's ``audio_durations`` file).
DURATIONS_COLUMNS = ("filename", "duration")


def display(text: str) -> str:
    """``text`` as it is written into a UTF-8 file: bytes that are not UTF-8 (a file name's) shown as ``\\xNN``.

    Example:
        >>> display("caf\\udce9.wav")
        'caf\\\\xe9.wav'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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


def write_all_events(path: str | Path, rows: Sequence[dict[str, str]], *, log_repairs: bool = True) -> None:
    """Concatenate the event lists of every complete input of index ``rows`` (this run's and earlier runs').

    Each input's ``.events.csv`` counts only when its ``.json`` vouches for it (the digest it records): one left by
    a run killed before its ``.json`` is replaced by the ``.json`` 's own event list, which the index describes
    (logged at INFO when ``log_repairs``).

    Example:
        >>> write_all_events("pred/events.csv", read_index("pred/index.csv"))   # doctest: +SKIP
    """
    from dcasenet_hub.hub.fetch import sha256_file

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENTS_COLUMNS)
    for row in rows:
        output = row.get("output", "")
        if row.get("status") not in ("ok", "skipped") or not output.endswith(".json"):
            continue
        events = Path(output[: -len(".json")] + ".events.csv")
        try:
            vouched = json.loads(Path(output).read_text(encoding="utf-8"))
            digests = (vouched.get("meta") or {}).get("digests")  # outputs of older releases have none
            if digests is None or (events.is_file() and digests.get("events") == sha256_file(events)):
                with open(events, encoding="utf-8", newline="") as fh:
                    records = [r for r in list(csv.reader(fh))[1:] if r]
            else:  # a killed run's file, an earlier run's of other settings, or none (other --event-format)
                if log_repairs and events.is_file():
                    logger.info("events.csv: %s is not the one %s vouches for (another run's); its events are "
                                "taken from the .json", events, output)
                name = _event_file_name(Path(path).parent, output, row["input"])
                records = [[name, f"{float(e['onset']):.3f}", f"{float(e['offset']):.3f}", str(e["event_label"])]
                           for e in vouched["events"]["list"]]
        except (OSError, UnicodeDecodeError, csv.Error, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("events.csv: skipping %s (%s)", events, one_line(exc))
            continue
        w.writerows(records)
    atomic_write_text(Path(path), buf.getvalue())


def _event_file_name(out_dir: Path, output: str, source: str) -> str:
    """The input's name in event and duration lists: its output's path under ``out_dir`` with the input's suffix."""
    return display(Path(os.path.relpath(output[: -len(".json")], out_dir)).as_posix() + Path(source).suffix)


def write_durations(path: str | Path, out_dir: str | Path, rows: Sequence[dict[str, str]]) -> None:
    """Write ``durations.tsv``: ``filename<TAB>duration`` of every complete ``predict`` input of index ``rows``.

    ``filename`` is the input's path relative to its root, as in ``events.csv`` (``sub/a.wav``), so sed_scores_eval's
    ``io.read_audio_durations`` gives the id ``sub/a`` of ``OUTDIR/sub/a.scores.tsv``; ``duration`` is in seconds
    (3 decimals, as the last offset of the score file).

    Example:
        >>> write_durations("pred/durations.tsv", "pred", read_index("pred/index.csv"))   # doctest: +SKIP
    """
    lines = ["\t".join(DURATIONS_COLUMNS)]
    for row in rows:
        output = row.get("output", "")
        if row.get("status") not in ("ok", "skipped") or not output.endswith(".json") or not row.get("duration_s"):
            continue
        lines.append(f"{tsv_cell(_event_file_name(Path(out_dir), output, row['input']))}\t{row['duration_s']}")
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def write_all_selections(path: str | Path, out_dir: str | Path, rows: Sequence[dict[str, str]]) -> None:
    """One Raven selection table of the events of every complete input of index ``rows``, from their ``.json``.

    The files are laid end to end in index order, as Raven opens a file set: ``Begin Time (s)`` counts from the
    first file's start, ``Begin File`` and ``File Offset (s)`` give each event's file and its time in it (what
    :func:`dcasenet_hub.metrics.read_annotations` reads back).
    """
    from dcasenet_hub.inference.outputs import raven_table

    events: list[tuple[float, float, str, float]] = []
    files: list[tuple[str, float]] = []
    start = 0.0
    for row in rows:
        output = row.get("output", "")
        if row.get("status") not in ("ok", "skipped") or not output.endswith(".json"):
            continue
        try:
            d = json.loads(Path(output).read_text(encoding="utf-8"))
            listed = [(float(e["onset"]), float(e["offset"]), str(e["event_label"])) for e in d["events"]["list"]]
            duration, high = float(d["duration_s"]), (d.get("sample_rate") or 24000) / 2
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("events.selections.txt: skipping %s (%s)", output, one_line(exc))
            continue
        rel = _event_file_name(Path(out_dir), output, row["input"])
        events += [(on, off, label, high) for on, off, label in listed]
        files += [(rel, start)] * len(listed)
        start += duration
    atomic_write_text(Path(path), raven_table(events, files=files))


def write_merged(out_dir: str | Path, rows: Sequence[dict[str, str]], event_formats: Sequence[str], *,
                 suffix: str = "", log_repairs: bool = True) -> None:
    """The folder-level files of a ``predict`` folder: ``durations.tsv`` and the merged event file of each format
    (``events.csv``, ``events.selections.txt``; Audacity tracks have none), ``-I-of-N`` before the extension for a
    shard. ``log_repairs``: say (INFO) when an input's events file is not the one its ``.json`` vouches for."""
    out_dir = Path(out_dir)
    write_durations(out_dir / f"durations{suffix}.tsv", out_dir, rows)
    # a merged file an earlier run wrote is kept current too, whatever this run's formats
    events, selections = out_dir / f"events{suffix}.csv", out_dir / f"events{suffix}.selections.txt"
    if "dcase" in event_formats or events.exists():
        write_all_events(events, rows, log_repairs=log_repairs)
    if "raven" in event_formats or selections.exists():
        write_all_selections(selections, out_dir, rows)
