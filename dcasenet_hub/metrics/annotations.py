"""Annotation files read for scoring: DCASE/DESED event tables, Raven selection tables, Audacity label tracks and
``filename,label[,label...]`` tables for scenes and tags (standard library only).

Every reader returns :class:`Annotations`: events or labels keyed by the file's name without its extension
(:func:`file_key`), so ``a.wav`` in an annotation matches the prediction of ``a.wav`` (``a.json`` in a ``predict``
folder). Problems are collected and raised together as one :class:`~dcasenet_hub.errors.AnnotationError` naming the
file, the line and the fix.

The column layouts are defined here once; ``predict --event-format`` writes the same layouts.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dcasenet_hub.errors import AnnotationError

#: Columns of the DCASE / DESED event table (tab-separated, header included).
DCASE_COLUMNS = ("filename", "onset", "offset", "event_label")
#: Columns of a Raven Pro selection table, in Raven's order (tab-separated, header included); ``Annotation`` is the
#: label column Raven adds for annotated selections.
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Annotation")
#: Columns of Raven tables that may hold the label, tried in this order.
RAVEN_LABEL_COLUMNS = ("Annotation", "Label", "Class", "Species", "Common Name", "Sound Type", "Call Type")
#: Extensions of the annotation files a folder is searched for.
ANNOTATION_SUFFIXES = (".txt", ".tsv", ".csv")
#: Header names of the file column of a label table or an event table.
_FILE_COLUMNS = ("filename", "fname", "file", "file_name", "audio", "path", "audio_filename")
_LABEL_COLUMNS = ("event_label", "label", "class", "event")
FORMATS = ("auto", "dcase", "raven", "audacity", "labels")


@dataclass
class Annotations:
    """The annotations of a set of files.

    Attributes:
        kind: ``"events"`` (onset, offset, label) or ``"labels"`` (labels per file: scenes or tags).
        events: ``{file key: [(onset_s, offset_s, label), ...]}`` for ``"events"`` (``[]``: annotated, no events).
        labels: ``{file key: [label, ...]}`` for ``"labels"``.
        names: ``{file key: the file's name as the annotation wrote it}``.
        format: ``"dcase"``, ``"raven"``, ``"audacity"`` or ``"labels"``.
        source: The file or folder read.
    """

    kind: str
    events: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    format: str = "dcase"
    source: str = ""

    @property
    def files(self) -> list[str]:
        """The file keys, in the order they were read."""
        return list(self.events if self.kind == "events" else self.labels)

    def label_set(self) -> list[str]:
        """Every label used, sorted."""
        if self.kind == "events":
            return sorted({e[2] for evs in self.events.values() for e in evs})
        return sorted({label for labels in self.labels.values() for label in labels})


def file_key(name: str) -> str:
    """A file's identity for matching annotations with predictions: its path with ``/`` and without the extension.

    Example:
        >>> file_key("recordings\\\\site1\\\\a.wav"), file_key("b.flac"), file_key("c")
        ('recordings/site1/a', 'b', 'c')
    """
    path = PurePosixPath(str(name).strip().replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix else str(path)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not UTF-8 text; save it as UTF-8 (Raven, Audacity and spreadsheets can)") \
            from None
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot be read ({exc.strerror or exc}); check the path") from None


def _rows(text: str, delimiter: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]


def _delimiter(first_line: str) -> str:
    return "\t" if "\t" in first_line else ","


def detect_format(path: Path, text: str) -> str:
    """``"raven"``, ``"dcase"``, ``"audacity"`` or ``"labels"`` from a file's first line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "labels"
    first = lines[0]
    if "Begin Time (s)" in first:
        return "raven"
    if "\t" not in first and "," not in first:  # a table with other separators would be read as one column
        for sep, name in ((";", "';'"), ("|", "'|'"), (None, "spaces")):
            cells = [c.strip().lower() for c in first.split(sep)]
            numbers = sum(_number(c) is not None for c in cells[1:3])
            if len(cells) >= 3 and ({"onset", "offset"} <= set(cells) or numbers == 2):
                raise AnnotationError(f"{path}: columns separated by {name}; separate them with tabs or commas "
                                      "(docs/evaluation.md shows the formats)")
    fields = [f.strip() for f in next(csv.reader([first], delimiter=_delimiter(first)))]
    lower = [f.lower() for f in fields]
    if "onset" in lower and "offset" in lower:
        return "dcase"
    if "\t" in first and len(fields) in (2, 3) and _number(fields[0]) is not None and _number(fields[1]) is not None:
        return "audacity"
    if "\t" in first and lower[:2] == ["start", "end"] and len(lines) > 1:
        return "audacity"  # a track with a header line a spreadsheet added (Audacity writes none)
    if len(fields) == 4 and _number(fields[1]) is not None and _number(fields[2]) is not None:
        return "dcase"
    return "labels"


class _Problems:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(text)

    def raise_if_any(self) -> None:
        if self.lines:
            shown = self.lines[:30]
            more = [f"  ... and {len(self.lines) - len(shown)} more"] if len(self.lines) > len(shown) else []
            raise AnnotationError("\n".join([f"{self.source}: {len(self.lines)} problem(s); fix them and run again:"]
                                            + [f"  - {p}" for p in shown] + more))


def _event(problems: _Problems, where: str, onset: str, offset: str, label: str) -> tuple[float, float, str] | None:
    on, off = _number(onset), _number(offset)
    if on is None or off is None:
        problems.add(f"{where}: onset {onset!r} and offset {offset!r} must be numbers of seconds")
        return None
    if on < 0 or off <= on:
        problems.add(f"{where}: the event {on:g}-{off:g} s must start at 0 s or later and end after it starts")
        return None
    if not label.strip():
        problems.add(f"{where}: the event {on:g}-{off:g} s has no label")
        return None
    return (on, off, label.strip())


def _read_dcase(path: Path, text: str, out: Annotations) -> None:
    problems = _Problems(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    rows = _rows(text, _delimiter(first))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "onset" in header and "offset" in header:
        try:
            col_file = next(header.index(c) for c in _FILE_COLUMNS if c in header)
            col_label = next(header.index(c) for c in _LABEL_COLUMNS if c in header)
        except StopIteration:
            raise AnnotationError(f"{path}: an event table needs the columns {', '.join(DCASE_COLUMNS)}; "
                                  f"found {', '.join(rows[0])}") from None
        cols = (col_file, header.index("onset"), header.index("offset"), col_label)
        body = list(enumerate(rows[1:], start=2))
    else:
        cols = (0, 1, 2, 3)
        body = list(enumerate(rows, start=1))
    for line, row in body:
        cells = [row[c].strip() if c < len(row) else "" for c in cols]
        if not cells[0]:
            problems.add(f"line {line}: no file name")
            continue
        key = file_key(cells[0])
        out.names.setdefault(key, cells[0])
        events = out.events.setdefault(key, [])
        if not cells[1] and not cells[2] and not cells[3]:
            continue  # DESED: a file without events is a row with its name only
        event = _event(problems, f"line {line}", cells[1], cells[2], cells[3])
        if event:
            events.append(event)
    problems.raise_if_any()


def raven_table_file(path: Path) -> str:
    """The audio file name a Raven table is for, from the table's own name (``a.Table.1.selections.txt`` -> ``a``).

    Example:
        >>> raven_table_file(Path("site1/a.Table.1.selections.txt"))
        'a'
    """
    name = path.name
    for pattern in (r"\.Table\.\d+\.selections\.txt$", r"\.selections\.txt$", r"\.txt$", r"\.tsv$"):
        if re.search(pattern, name, flags=re.IGNORECASE):
            return re.sub(pattern, "", name, flags=re.IGNORECASE)
    return path.stem


def _read_raven(path: Path, text: str, out: Annotations, *, name: str | None) -> None:
    problems = _Problems(path)
    rows = _rows(text, "\t")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ("Begin Time (s)", "End Time (s)") if c not in header]
    label_col = next((c for c in RAVEN_LABEL_COLUMNS if c in header), None)
    if missing or label_col is None:
        need = missing + ([] if label_col else [f"a label column ({' or '.join(RAVEN_LABEL_COLUMNS)})"])
        raise AnnotationError(f"{path}: a Raven selection table needs {', '.join(need)}; found {', '.join(header)}. "
                              "In Raven, add an 'Annotation' column and save the table (File > Save Selection Table)")
    col = {c: i for i, c in enumerate(header)}
    seen: set[str] = set()
    default = name or raven_table_file(path)
    for line, row in enumerate(rows[1:], start=2):
        def cell(c: str, row: list[str] = row) -> str:
            return row[col[c]].strip() if c in col and col[c] < len(row) else ""

        selection = cell("Selection")
        if selection:
            if selection in seen:
                continue  # Raven writes a selection once per view (waveform, spectrogram): the first row counts
            seen.add(selection)
        begin, end = cell("Begin Time (s)"), cell("End Time (s)")
        named = cell("Begin File") or Path(cell("Begin Path").replace("\\", "/")).name
        audio = named or default
        file_offset = _number(cell("File Offset (s)")) if named else None
        if file_offset is not None and _number(begin) is not None and _number(end) is not None:
            # tables over several files: Begin Time counts from the first file, File Offset from the event's file
            begin, end = repr(file_offset), repr(file_offset + float(end) - float(begin))
        key = file_key(audio) if named else audio  # a table's own name has no audio extension to drop
        out.names.setdefault(key, audio)
        events = out.events.setdefault(key, [])
        event = _event(problems, f"line {line} (selection {selection or '?'})", begin, end, cell(label_col))
        if event:
            events.append(event)
    if not rows[1:]:
        out.names.setdefault(default, default)
        out.events.setdefault(default, [])
    problems.raise_if_any()


def audacity_track_file(path: Path) -> str:
    """The audio file name an Audacity label track is for, from its name (``a.labels.txt`` or ``a.txt`` -> ``a``).

    Example:
        >>> audacity_track_file(Path("a.b.labels.txt"))
        'a.b'
    """
    name = path.name
    for suffix in (".labels.txt", ".txt"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_audacity(path: Path, text: str, out: Annotations, *, name: str | None) -> None:
    problems = _Problems(path)
    audio = name or audacity_track_file(path)
    key = file_key(audio) if name else audio  # a track's own name has no audio extension to drop
    out.names.setdefault(key, audio)
    events = out.events.setdefault(key, [])
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("\\"):
            continue  # "\\\tlow\thigh": the frequency range of a spectral selection, on its own line
        cells = raw.split("\t")
        if len(cells) < 2:
            problems.add(f"line {line}: an Audacity label is start<TAB>end<TAB>label; got {raw!r}")
            continue
        if line == 1 and [c.strip().lower() for c in cells[:2]] == ["start", "end"]:
            continue  # a header line
        event = _event(problems, f"line {line}", cells[0], cells[1], cells[2] if len(cells) > 2 else "")
        if event:
            events.append(event)
    problems.raise_if_any()


def _read_labels(path: Path, text: str, out: Annotations) -> None:
    problems = _Problems(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    rows = _rows(text, _delimiter(first))
    if rows and rows[0][0].strip().lower() in _FILE_COLUMNS:
        rows = rows[1:]
        start = 2
    else:
        start = 1
    for line, row in enumerate(rows, start=start):
        name = row[0].strip()
        if not name:
            problems.add(f"line {line}: no file name")
            continue
        labels = [p.strip() for cell in row[1:] for p in cell.split(",") if p.strip()]
        key = file_key(name)
        out.names.setdefault(key, name)
        have = out.labels.setdefault(key, [])
        have += [label for label in labels if label not in have]
    problems.raise_if_any()


def read_annotations(path: str | Path, *, format: str = "auto", audio_name: str | None = None) -> Annotations:
    """Read an annotation file, or a folder of them (one Raven table or Audacity label track per audio file).

    Formats (``format="auto"`` tells them apart by the first line):

    * ``"dcase"``: ``filename<TAB>onset<TAB>offset<TAB>event_label`` with a header (DCASE, DESED; comma-separated and
      header-less 4-column files work too, as do ``predict``'s ``events.csv`` files); a row with a file name only is
      a file without events.
    * ``"raven"``: a Raven Pro selection table (``Begin Time (s)``, ``End Time (s)`` and a label column:
      ``Annotation`` or another of :data:`RAVEN_LABEL_COLUMNS`); the audio file is ``Begin File`` (with
      ``File Offset (s)``) or the table's own name (``a.Table.1.selections.txt`` -> ``a``).
    * ``"audacity"``: an Audacity label track (``start<TAB>end<TAB>label``, no header); the audio file is the track's
      own name (``a.txt`` -> ``a``) or ``audio_name``.
    * ``"labels"``: ``filename,label[,label...]`` (CSV or TSV, optional header; a quoted ``"a,b"`` cell holds
      several labels) for scenes (one label per file) and tags.

    Args:
        path: A file, or a folder searched recursively for ``.txt``, ``.tsv`` and ``.csv`` files.
        format: One of :data:`FORMATS`.
        audio_name: The audio file of a single Raven table or Audacity track (default: from the file's name).

    Raises:
        AnnotationError: the file is unreadable or has bad rows (all are listed, with their line numbers).

    Example:
        >>> ann = read_annotations("truth.tsv")             # doctest: +SKIP
        >>> ann.kind, ann.events["a"][:1]                   # doctest: +SKIP
        ('events', [(0.5, 2.3, 'dog')])
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise AnnotationError(f"{path}: no annotation files (.txt, .tsv, .csv) in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise AnnotationError(f"{path}: no such file or folder; give the annotation file (or a folder of them)")
    out: Annotations | None = None
    for file in files:
        text = _read_text(file)
        if not text.strip() and len(files) == 1:
            raise AnnotationError(f"{file}: is empty; give the file with your annotations (docs/evaluation.md shows "
                                  "the formats)")
        kind = format if format != "auto" else detect_format(file, text)
        if out is None:
            out = Annotations(kind="labels" if kind == "labels" else "events", format=kind, source=str(path))
        elif (kind == "labels") != (out.kind == "labels"):
            raise AnnotationError(f"{file}: holds {'labels' if kind == 'labels' else 'events'} but {files[0]} holds "
                                  f"{out.kind}; score one kind at a time")
        if kind == "dcase":
            _read_dcase(file, text, out)
        elif kind == "raven":
            _read_raven(file, text, out, name=audio_name if len(files) == 1 else None)
        elif kind == "audacity":
            _read_audacity(file, text, out, name=audio_name if len(files) == 1 else None)
        else:
            _read_labels(file, text, out)
        if out.format != kind:
            out.format = "mixed"
    assert out is not None  # files is never empty here
    return out
