"""Labelled tables and the clip record: ``path,label(s)`` tables, strong-label (onset/offset) tables, split columns.

:func:`dcasenet_hub.finetuning.data.read_dataset` reads class folders itself and tables through :func:`read_table`.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcasenet_hub.errors import DataError
from dcasenet_hub.finetuning.options import TASK_WORDS

logger = logging.getLogger("dcasenet_hub.finetuning.data")  # its messages keep the name they had

TRAIN_NAMES = ("train", "training")
VALIDATION_NAMES = ("validation", "val", "valid", "dev", "development")
_PATH_COLUMNS = ("path", "filename", "file", "fname", "file_name", "filepath", "audio", "audio_path", "audio_filename")
_LABEL_COLUMNS = {
    "scene": ("label", "class", "scene_label", "category", "target", "labels"),
    "tags": ("labels", "label", "tags", "tag", "class", "category"),
    "events": ("event_label", "label", "event", "class", "category"),
}
_ONSET_COLUMNS = ("onset", "event_onset", "start", "start_time")
_OFFSET_COLUMNS = ("offset", "event_offset", "end", "end_time", "stop")
_SPLIT_COLUMNS = ("split", "set", "subset", "partition")


@dataclass(frozen=True)
class Clip:
    """One labelled audio file.

    Attributes:
        path: The audio file.
        labels: Label names present in the clip (exactly one for classification).
        events: ``(onset_s, offset_s, label)`` for detection, sorted.
        duration: Length in seconds (from the file header; ``None`` when audio was not checked).
        split: ``"train"``, ``"validation"`` or ``None`` before the split.
    """

    path: Path
    labels: tuple[str, ...]
    events: tuple[tuple[float, float, str], ...] = ()
    duration: float | None = None
    split: str | None = None


def _guess_delimiter(path: Path, first_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    if "\t" in first_line:
        return "\t"
    if ";" in first_line and "," not in first_line:
        return ";"
    return ","


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pick(header: list[str], candidates: Iterable[str]) -> int | None:
    for name in candidates:
        if name in header:
            return header.index(name)
    return None


def read_table(path: Path, task: str, delimiter: str | None, label_delimiter: str,
                audio_dir: str | Path | None, problems: list[str]) -> list[Clip]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, [f"{path}: cannot read the table ({exc})"]) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(path, [f"{path}: the table is empty"])
    first = next(line for line in lines if line.strip())
    sep = delimiter or _guess_delimiter(path, first)
    rows = [r for r in csv.reader(lines, delimiter=sep)]
    # (line number, cells) without blank lines
    numbered = [(i + 1, [c.strip() for c in r]) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    header_cells = [c.lower() for c in numbered[0][1]]
    base = Path(audio_dir).expanduser() if audio_dir is not None else path.parent

    path_col = _pick(header_cells, _PATH_COLUMNS)
    if path_col is not None:
        body = numbered[1:]
        label_col = _pick(header_cells, _LABEL_COLUMNS[task])
        split_col = _pick(header_cells, _SPLIT_COLUMNS)
        onset_col = _pick(header_cells, _ONSET_COLUMNS)
        offset_col = _pick(header_cells, _OFFSET_COLUMNS)
        missing = []
        if label_col is None:
            missing.append(f"a label column ({' / '.join(_LABEL_COLUMNS[task][:3])})")
        if task == "events" and (onset_col is None or offset_col is None):
            missing.append("'onset' and 'offset' columns (seconds)")
        if missing:
            raise DataError(path, [f"{path}: header {numbered[0][1]} lacks {' and '.join(missing)} "
                                   f"for {TASK_WORDS[task]}; expected e.g. "
                                   + ("filename,onset,offset,event_label" if task == "events" else
                                      "path,label" if task == "scene" else "path,labels")])
    else:
        # no header: positional columns
        body = numbered
        path_col, label_col = 0, (3 if task == "events" else 1)
        onset_col, offset_col = (1, 2) if task == "events" else (None, None)
        split_col = None  # a split column needs a header
        if task != "events" and len(numbered[0][1]) < 2 and not any(len(c) > 1 for _, c in numbered):
            msg = (f"{path}: expected a header (path,label) or two columns per row, found one column; "
                   f"is the delimiter {sep!r} right? (--delimiter)")
            raise DataError(path, [msg])
        logger.info("%s has no header; reading columns positionally", path)

    per_file: dict[Path, dict[str, Any]] = {}
    order: list[Path] = []
    for line_no, cells in body:
        where = f"{path.name} line {line_no}"

        def cell(i: int | None, cells: list[str] = cells) -> str:
            return cells[i] if i is not None and i < len(cells) else ""

        name = cell(path_col)
        if not name:
            problems.append(f"{where}: no file name")
            continue
        file = Path(name).expanduser()
        file = file if file.is_absolute() else base / file
        entry = per_file.get(file)
        if entry is None:
            entry = {"labels": [], "events": [], "splits": set(), "line": line_no}
            per_file[file] = entry
            order.append(file)
        split_text = cell(split_col).lower()
        if split_text:
            split = _normalise_split(split_text)
            if split is None:
                problems.append(f"{where}: unknown split '{cell(split_col)}' for {name} "
                                f"(use 'train' or 'validation')")
            else:
                entry["splits"].add(split)
        label_text = cell(label_col)
        if task == "events":
            on_text, off_text = cell(onset_col), cell(offset_col)
            if not (on_text or off_text or label_text):
                continue  # a clip without events
            if not (on_text and off_text and label_text):
                problems.append(f"{where}: {name} needs onset, offset and event_label together "
                                f"(got onset '{on_text}', offset '{off_text}', label '{label_text}')")
                continue
            if not (_is_number(on_text) and _is_number(off_text)):
                problems.append(f"{where}: onset/offset of {name} are not numbers ('{on_text}', '{off_text}')")
                continue
            onset, offset = float(on_text), float(off_text)
            if not (math.isfinite(onset) and math.isfinite(offset)) or onset < 0 or offset <= onset:
                problems.append(f"{where}: event '{label_text}' in {name} has onset {onset:g} s and offset "
                                f"{offset:g} s (need 0 <= onset < offset)")
                continue
            entry["events"].append((onset, offset, label_text))
            entry["labels"].append(label_text)
        else:
            if not label_text:
                if task == "scene":
                    problems.append(f"{where}: no label for {name}")
                continue
            if task == "tags" and label_delimiter:
                entry["labels"].extend(s.strip() for s in label_text.split(label_delimiter) if s.strip())
            else:
                entry["labels"].append(label_text)

    clips: list[Clip] = []
    for file in order:
        entry = per_file[file]
        labels = list(dict.fromkeys(entry["labels"]))
        if len(entry["splits"]) > 1:
            problems.append(f"{path.name} line {entry['line']}: {file.name} is listed in both train and validation")
        if task == "scene" and len(labels) > 1:
            problems.append(f"{path.name} line {entry['line']}: {file.name} has {len(labels)} labels "
                            f"({', '.join(labels)}); classification needs exactly one (use --task tagging for "
                            "several labels per clip)")
        if task == "scene" and not labels:
            continue  # already reported
        split = next(iter(entry["splits"])) if len(entry["splits"]) == 1 else None
        events = tuple(sorted(entry["events"]))
        clips.append(Clip(path=file, labels=tuple(labels), events=events, split=split))
    if not clips and not problems:
        problems.append(f"{path}: no clips listed")
    splits = {c.split for c in clips}
    if None in splits and len(splits) > 1:
        problems.append(f"{path}: the split column is filled for some files but not for others "
                        f"({sum(c.split is None for c in clips)} without); fill it for every file or for none")
    return clips


def _normalise_split(text: str) -> str | None:
    if text in TRAIN_NAMES:
        return "train"
    if text in VALIDATION_NAMES:
        return "validation"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Checks, labels, split
# ----------------------------------------------------------------------------------------------------------------
