"""Labelled data for :func:`dcasenet_hub.finetune`, read from the forms people keep it in.

:func:`read_dataset` reads a folder with one sub-folder per class (``data/<class>/...``; ``data/train/<class>/...`` and
``data/validation/<class>/...`` give the split), a CSV/TSV table ``path,label`` or ``path,labels`` (tagging: several
labels in one cell or one row per label) or strong labels ``filename,onset,offset,event_label`` (detection; a row with
only a file name is a clip without events). Without a ``split`` column or split folders the clips are split by a
stratified draw of ``validation_fraction`` with a fixed ``seed``. Every problem (missing file, unknown label, bad
onset/offset ...) is collected and raised together in one :class:`DataError` before anything is trained. Details and
examples: docs/finetuning.md, "Data forms".

Example:
    >>> from dcasenet_hub.finetuning.data import read_dataset
    >>> data = read_dataset("my_sounds/", task="classification")          # doctest: +SKIP
    >>> data.labels, len(data.train), len(data.validation)                # doctest: +SKIP
    (('dog', 'rain'), 32, 8)
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub.audio.io import AUDIO_EXTENSIONS
from dcasenet_hub.audio.windows import MIN_DURATION_S
from dcasenet_hub.config import LABEL_RULE, label_problem
from dcasenet_hub.errors import DataError
from dcasenet_hub.finetuning.options import TASK_WORDS, finetune_task
from dcasenet_hub.finetuning.tables import (
    TRAIN_NAMES,
    VALIDATION_NAMES,
    Clip,
    read_table,
)

logger = logging.getLogger(__name__)

#: Fine-tuning's words for the three heads, as data forms and messages name them (aliases of config.TASKS).
TASKS = tuple(TASK_WORDS.values())
_MAX_LISTED = 60


@dataclass
class Dataset:
    """A labelled data set ready for fine-tuning.

    Attributes:
        task: The head it trains: ``"scene"``, ``"tags"`` or ``"events"`` (``"classification"``, ``"tagging"`` and
            ``"detection"`` are accepted and stored as those).
        labels: The label names in output order.
        train: Training clips.
        validation: Validation clips.
        source: The folder or table it was read from.
        split: How the split was made.
    """

    task: str
    labels: tuple[str, ...]
    train: list[Clip]
    validation: list[Clip]
    source: str
    split: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.task = finetune_task(self.task)

    @property
    def task_word(self) -> str:
        """Fine-tuning's word for the task (``"classification"``, ``"tagging"``, ``"detection"``)."""
        return TASK_WORDS[self.task]

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips per label in each split (for detection: clips containing the label)."""
        out: dict[str, dict[str, int]] = {}
        for name, clips in (("train", self.train), ("validation", self.validation)):
            c = Counter(label for clip in clips for label in set(clip.labels))
            out[name] = {label: int(c.get(label, 0)) for label in self.labels}
        return out

    def summary(self) -> str:
        """One line: source, task, label count and clip counts."""
        name = Path(self.source).name or self.source
        return (f"'{name}' ({self.task_word}, {len(self.labels)} labels, {len(self.train)} training / "
                f"{len(self.validation)} validation clips)")

    def to_dict(self) -> dict[str, Any]:
        """Summary for the model card and ``config.extra``."""
        hours = sum(c.duration or 0.0 for c in self.train + self.validation) / 3600.0
        d: dict[str, Any] = {
            "source": Path(self.source).name,  # the name only: the record travels with the model
            "task": self.task_word,  # the word records have always held (canonical_task reads it)
            "labels": list(self.labels),
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "split": self.split,
            "hours": round(hours, 4),
            "clips_per_label": self.counts(),
        }
        if self.task == "events":
            d["n_events"] = {s: sum(len(c.events) for c in clips)
                             for s, clips in (("train", self.train), ("validation", self.validation))}
        return d


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def read_dataset(
    data: str | Path,
    *,
    task: str,
    labels: Sequence[str] | None = None,
    delimiter: str | None = None,
    label_delimiter: str = ",",
    audio_dir: str | Path | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    check_audio: bool = True,
) -> Dataset:
    """Read a labelled folder or table, check every file and label, and split it.

    Args:
        data: A class-per-folder directory, or a ``.csv``/``.tsv`` table (for detection a directory holding exactly
            one table is also accepted).
        task: ``"classification"``, ``"tagging"`` or ``"detection"`` (or ``"scene"``, ``"tags"``, ``"events"``).
        labels: The label names in the wanted output order; labels in the data outside this list are reported as
            problems, and each listed label needs training clips. Default: every label found, sorted.
        delimiter: Column separator of the table (default: tab for ``.tsv``, otherwise guessed from the header line).
        label_delimiter: Separator of several labels in one cell (tagging).
        audio_dir: Folder the table's paths are relative to (default: the table's folder).
        validation_fraction: Share of clips drawn for validation when the data names no split.
        seed: Seed of that draw.
        check_audio: Open every file's header (missing, unreadable, empty files become problems).

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: one or more problems, all listed.
        ValueError: bad arguments (unknown task, fraction outside (0, 1)).
    """
    task = finetune_task(task)
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction}")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(path, [f"{path}: not found (give a folder with one sub-folder per class, or a CSV/TSV file)"])
    problems: list[str] = []
    if path.is_dir():
        tables = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".tsv") and p.is_file())
        if task == "events":
            if len(tables) != 1:
                found = ", ".join(p.name for p in tables) or "none"
                msg = (f"{path}: detection needs a strong-label table (filename, onset, offset, event_label); "
                       f"give the .csv/.tsv file itself (tables found here: {found})")
                raise DataError(path, [msg])
            path = tables[0]
            clips = read_table(path, task, delimiter, label_delimiter, audio_dir, problems)
        else:
            clips = _read_folders(path, problems)
    else:
        clips = read_table(path, task, delimiter, label_delimiter, audio_dir, problems)

    if check_audio:
        clips = _check_audio(clips, problems)
    label_names = _resolve_labels(clips, labels, task, problems)
    dataset = _split(clips, label_names, task, validation_fraction, seed, problems)
    dataset.source = str(path)
    if problems:
        raise DataError(path, problems)
    for note in dataset.notes:
        logger.warning("%s", note)
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------------


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS)


def _read_folders(root: Path, problems: list[str]) -> list[Clip]:
    subdirs = _visible_dirs(root)
    names = {p.name.lower(): p for p in subdirs}
    train_dir = next((names[n] for n in TRAIN_NAMES if n in names), None)
    val_dir = next((names[n] for n in VALIDATION_NAMES if n in names), None)
    if train_dir is not None or val_dir is not None:
        if train_dir is None or val_dir is None:
            have = (train_dir or val_dir).name  # type: ignore[union-attr]
            problems.append(f"{root}: has a '{have}' folder but not its partner; use both train/ and validation/ "
                            "(each with one sub-folder per class), or neither")
            return []
        for other in subdirs:
            if other not in (train_dir, val_dir):
                problems.append(f"{other}: unexpected folder next to {train_dir.name}/ and {val_dir.name}/ "
                                "(move it inside them as a class folder, or remove it)")
        return (_read_class_folders(train_dir, "train", problems)
                + _read_class_folders(val_dir, "validation", problems))
    return _read_class_folders(root, None, problems)


def _read_class_folders(folder: Path, split: str | None, problems: list[str]) -> list[Clip]:
    clips: list[Clip] = []
    loose = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    for p in loose:
        problems.append(f"{p}: audio file outside any class folder (move it into {folder}/<class>/)")
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        problems.append(f"{folder}: no class folders (expected {folder}/<class>/<audio files>)")
    for d in class_dirs:
        files = _audio_files(d)
        if not files:
            problems.append(f"{d}: empty class '{d.name}' (no audio files; add clips or remove the folder)")
        clips.extend(Clip(path=f, labels=(d.name,), split=split) for f in files)
    return clips


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------


def _check_audio(clips: list[Clip], problems: list[str]) -> list[Clip]:
    from dcasenet_hub.audio import AudioLoadError, audio_info

    out = []
    for clip in clips:
        try:
            sr, _channels, frames = audio_info(clip.path)
        except AudioLoadError as exc:
            problems.append(str(exc))
            continue
        if frames <= 0:
            problems.append(f"{clip.path}: contains no audio samples")
            continue
        duration = frames / float(sr)
        if duration < MIN_DURATION_S:
            problems.append(f"{clip.path}: only {duration * 1000:.0f} ms long; clips need at least "
                            f"{MIN_DURATION_S * 1000:.0f} ms")
            continue
        for onset, offset, label in clip.events:
            if onset >= duration:
                problems.append(f"{clip.path}: event '{label}' starts at {onset:g} s, after the end of the "
                                f"{duration:.2f} s file")
        out.append(Clip(path=clip.path, labels=clip.labels, events=clip.events, duration=duration,
                        split=clip.split))
    return out


def _resolve_labels(clips: list[Clip], labels: Sequence[str] | None, task: str,
                    problems: list[str]) -> tuple[str, ...]:
    seen = sorted({label for c in clips for label in c.labels})
    if labels is None:
        names = tuple(seen)
    else:
        names = tuple(labels)
        dupes = sorted(n for n, k in Counter(names).items() if k > 1)
        if dupes:
            problems.append(f"the label list names {', '.join(dupes)} more than once")
        known = set(names)
        for c in clips:
            for label in c.labels:
                if label not in known:
                    problems.append(f"{c.path}: unknown label '{label}' (not in the given labels: "
                                    f"{', '.join(names)})")
    first_clip = {}
    for c in clips:
        for label in c.labels:
            first_clip.setdefault(label, c.path)
    for label in dict.fromkeys((*names, *seen)):  # the same rule and words as a model config's label fields
        why = label_problem(label)
        if why is not None:
            where = f"{first_clip[label]}: " if label in first_clip else "the label list: "
            problems.append(f"{where}label {label!r} {why}; allowed: {LABEL_RULE}")
    if task == "scene" and len(names) < 2 and clips:
        problems.append(f"classification needs at least 2 classes, found {len(names)} ({', '.join(names) or 'none'})")
    if task != "scene" and not names and clips:
        problems.append("no labels found in the data")
    return names


def _stratum(clip: Clip, freq: Counter) -> str:
    if not clip.labels:
        return ""
    return min(clip.labels, key=lambda label: (freq[label], label))


def _split(clips: list[Clip], names: tuple[str, ...], task: str, fraction: float, seed: int,
           problems: list[str]) -> Dataset:
    notes: list[str] = []
    given = any(c.split is not None for c in clips)
    if given:
        train = [c for c in clips if c.split == "train"]
        validation = [c for c in clips if c.split == "validation"]
        how = "given by the data"
    else:
        freq = Counter(label for c in clips for label in c.labels)
        groups: dict[str, list[Clip]] = defaultdict(list)
        for c in sorted(clips, key=lambda c: str(c.path)):
            groups[_stratum(c, freq)].append(c)
        rng = random.Random(seed)
        train, validation = [], []
        for key in sorted(groups):
            group = groups[key]
            rng.shuffle(group)
            n_val = round(len(group) * fraction)
            if n_val == 0 and len(group) >= 2:
                n_val = 1
            n_val = min(n_val, len(group) - 1)
            validation += [Clip(c.path, c.labels, c.events, c.duration, "validation") for c in group[:n_val]]
            train += [Clip(c.path, c.labels, c.events, c.duration, "train") for c in group[n_val:]]
        how = f"stratified draw of {fraction:.0%} for validation (seed {seed})"
    train_counts = Counter(label for c in train for label in c.labels)
    val_counts = Counter(label for c in validation for label in c.labels)
    for label in names:
        if train_counts[label] == 0 and clips:
            where = " (it has validation clips only)" if val_counts[label] else ""
            problems.append(f"empty class '{label}': no training clips{where}; add clips or drop the label")
        elif val_counts[label] == 0 and validation:
            notes.append(f"label '{label}' has no validation clips; its validation score is not measured")
    if clips and not train:
        problems.append("no training clips")
    if clips and not validation:
        problems.append("no validation clips (add a validation split, or more clips so that one can be drawn)")
    return Dataset(task=task, labels=names, train=train, validation=validation, source="", split=how, notes=notes)


__all__ = ["TASKS", "Clip", "DataError", "Dataset", "read_dataset"]
