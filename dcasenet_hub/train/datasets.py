"""Readers for the three official dataset layouts, with the DcaseNet authors' train/evaluation splits.

* :func:`asc_items` - TAU Urban Acoustic Scenes 2020 Mobile, development: ``evaluation_setup/fold1_train.csv`` /
  ``fold1_evaluate.csv`` (the official fold 1 setup, which the authors used).
* :func:`tag_items` - FSDKaggle2019 curated subset (Kaggle layout, as the authors, or Zenodo layout): the rows of the
  metadata CSV split by ``KFold(n_splits=5, shuffle=True, random_state=42)``, fold 0 (3 976 train / 994 evaluate).
* :func:`sed_items` - TAU-NIGENS Spatial Sound Events 2020, development: folds 3-6 train, fold 1 evaluate (the
  authors never used fold 2; ``split="validation"`` gives it), each of the 4 channels one item.

Every reader returns a list of :class:`Item`. Split names: ``"train"`` and ``"evaluate"`` (alias ``"eval"``).
Only the standard library and numpy are used; nothing here decodes audio.

Example:
    >>> from dcasenet_hub.train import datasets
    >>> items = datasets.asc_items("/data/TAU-urban-acoustic-scenes-2020-mobile-development", "train")  # doctest: +SKIP
    >>> len(items), items[0].target                                                                     # doctest: +SKIP
    (13965, 0)
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub import labels as _labels
from dcasenet_hub.errors import DatasetLayoutError

__all__ = [
    "ASC_FOLDER",
    "SED_EVAL_FOLDS",
    "SED_LABEL_FRAMES",
    "SED_TRAIN_FOLDS",
    "SED_VALIDATION_FOLDS",
    "DatasetLayoutError",
    "Item",
    "asc_items",
    "find_asc_root",
    "kfold_indices",
    "sed_items",
    "tag_items",
    "tag_layout",
]

logger = logging.getLogger(__name__)

#: Official folder name of the ASC development set.
ASC_FOLDER = "TAU-urban-acoustic-scenes-2020-mobile-development"
#: Authors' SED split (``utils.split_dcase2020_sed``): train folds 3-6, evaluation fold 1; fold 2 unused.
SED_TRAIN_FOLDS: tuple[int, ...] = (3, 4, 5, 6)
SED_EVAL_FOLDS: tuple[int, ...] = (1,)
#: The official validation fold (not used by the authors).
SED_VALIDATION_FOLDS: tuple[int, ...] = (2,)
#: Label frames per 60 s TAU-NIGENS recording (100 ms hop).
SED_LABEL_FRAMES = 600
#: Authors' TAG split: ``KFold(n_splits=5, shuffle=True, random_state=42)``, first fold.
TAG_KFOLD_SPLITS = 5
TAG_KFOLD_SEED = 42


@dataclass(frozen=True)
class Item:
    """One training or evaluation example.

    Attributes:
        path: audio file.
        target: ASC: scene index (``int``, into :data:`dcasenet_hub.labels.SCENES`); TAG: ``(80,)`` float32 multi-hot
            over :data:`dcasenet_hub.labels.TAGS`; SED: ``(600, 14)`` float32 frame activity at 100 ms over
            :data:`dcasenet_hub.labels.EVENTS` (shared by the 4 channel items of a recording: do not modify in place).
        channel: SED: channel index 0..3 of ``path``; None for the mono ASC/TAG files.
        name: identifier, e.g. ``"airport-lisbon-1000-40000-a"``, ``"0006ae4e"``, ``"fold1_room1_mix001_ov1:ch1"``
            (the authors' feature-file naming, channels counted from 1).
    """

    path: Path
    target: Any
    channel: int | None = None
    name: str = field(default="")


def _split_name(split: str, allowed: tuple[str, ...] = ("train", "evaluate")) -> str:
    s = {"eval": "evaluate", "evaluation": "evaluate", "val": "validation"}.get(split, split)
    if s not in allowed:
        raise ValueError(f"split must be one of {', '.join(repr(a) for a in allowed)} (or 'eval'); got {split!r}")
    return s


# ---------------------------------------------------------------------------------------------------------------------
# ASC: TAU Urban Acoustic Scenes 2020 Mobile, development
# ---------------------------------------------------------------------------------------------------------------------

_ASC_LAYOUT = (
    f"{ASC_FOLDER}/\n  meta.csv\n  evaluation_setup/fold1_train.csv\n  evaluation_setup/fold1_evaluate.csv\n"
    "  audio/<scene>-<city>-<location>-<segment>-<device>.wav"
)


def find_asc_root(root: str | Path) -> Path:
    """The ASC dataset folder: ``root`` itself if it holds ``meta.csv``, else ``root/TAU-urban-acoustic-scenes-2020-mobile-development``.

    Raises:
        DatasetLayoutError: neither folder holds ``meta.csv`` and ``evaluation_setup/``.
    """
    root = Path(root).expanduser()
    for candidate in (root, root / ASC_FOLDER):
        if (candidate / "meta.csv").is_file() or (candidate / "evaluation_setup").is_dir():
            return candidate
    raise DatasetLayoutError(
        f"No TAU Urban Acoustic Scenes 2020 Mobile development set at {root}: neither {root / 'meta.csv'} nor "
        f"{root / ASC_FOLDER / 'meta.csv'} exists. Expected layout (pass the folder or its parent):\n{_ASC_LAYOUT}\n"
        "Download it with `dcasenet-hub data download tau2020-asc -o DIR`."
    )


def _read_tsv(path: Path, layout: str) -> list[list[str]]:
    if not path.is_file():
        raise DatasetLayoutError(f"Missing {path}. Expected layout:\n{layout}")
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f, delimiter="\t") if row and any(cell.strip() for cell in row)]


def _check_missing(missing: list[Path], what: str, on_missing: str) -> None:
    if not missing:
        return
    shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
    message = f"{len(missing)} {what} listed in the metadata are missing (e.g. {shown})"
    if on_missing == "skip":
        logger.warning("%s; skipping them", message)
        return
    raise DatasetLayoutError(
        f"{message}. Complete the download/extraction, or pass on_missing='skip' to use the files that exist "
        "(the authors' code silently skips missing files)."
    )


def asc_items(root: str | Path, split: str, *, on_missing: str = "error") -> list[Item]:
    """Items of the official fold-1 setup of TAU Urban Acoustic Scenes 2020 Mobile, development.

    ``"train"`` = ``evaluation_setup/fold1_train.csv`` (13 965 files), ``"evaluate"`` = ``fold1_evaluate.csv``
    (2 970 files), in CSV order. The scene index is that of the file-name prefix before the first ``-`` in
    :data:`dcasenet_hub.labels.SCENES`, as in the authors' code (it must agree with the CSV's ``scene_label``).

    Args:
        root: the folder holding ``meta.csv``, ``evaluation_setup/`` and ``audio/``, or its parent.
        split: ``"train"`` or ``"evaluate"`` (``"eval"``).
        on_missing: ``"error"`` (default) or ``"skip"`` for listed audio files that do not exist.

    Returns:
        List of :class:`Item` with ``target`` = scene index and ``name`` = file stem.

    Raises:
        DatasetLayoutError: missing folder, CSV or audio files.
        ValueError: unknown split or scene label.

    Example:
        >>> items = asc_items("data/asc", "evaluate")  # doctest: +SKIP
        >>> items[0].path.name, items[0].target         # doctest: +SKIP
        ('airport-barcelona-0-0-a.wav', 0)
    """
    split = _split_name(split)
    base = find_asc_root(root)
    csv_path = base / "evaluation_setup" / f"fold1_{split}.csv"
    rows = _read_tsv(csv_path, _ASC_LAYOUT)
    if rows and rows[0][0].strip() == "filename":
        rows = rows[1:]
    scene_index = {s: i for i, s in enumerate(_labels.SCENES)}
    items: list[Item] = []
    missing: list[Path] = []
    for row in rows:
        rel = row[0].strip()
        fname = rel.split("/")[-1]
        scene = fname.split("-")[0]
        if scene not in scene_index:
            raise ValueError(f"{csv_path}: file {rel!r} has scene {scene!r}, not one of {', '.join(_labels.SCENES)}")
        if len(row) > 1 and row[1].strip() and row[1].strip() != scene:
            raise ValueError(f"{csv_path}: file {rel!r} is labelled {row[1].strip()!r} but its name says {scene!r}")
        path = base / "audio" / fname
        if not path.is_file():
            missing.append(path)
            continue
        items.append(Item(path=path, target=scene_index[scene], channel=None, name=Path(fname).stem))
    _check_missing(missing, "ASC audio files", on_missing)
    if not items:
        raise DatasetLayoutError(f"{csv_path} lists no usable audio file. Expected layout:\n{_ASC_LAYOUT}")
    return items


# ---------------------------------------------------------------------------------------------------------------------
# TAG: FSDKaggle2019, curated subset
# ---------------------------------------------------------------------------------------------------------------------

_TAG_LAYOUT = (
    "Kaggle layout (the authors'):\n  train_curated.csv  (fname,labels)\n  train_curated/<fname>.wav\n"
    "  sample_submission.csv  (optional; its columns give the label order)\n"
    "or Zenodo layout (record 3612637, extracted):\n  FSDKaggle2019.meta/train_curated_post_competition.csv\n"
    "  FSDKaggle2019.audio_train_curated/<fname>.wav"
)


def tag_layout(root: str | Path) -> tuple[str, Path, Path]:
    """Detect the FSDKaggle2019 layout under ``root``.

    Returns:
        ``(layout, csv_path, audio_dir)`` with layout ``"kaggle"`` or ``"zenodo"``.

    Raises:
        DatasetLayoutError: neither layout is present.
    """
    root = Path(root).expanduser()
    kaggle = (root / "train_curated.csv", root / "train_curated")
    zenodo = (root / "FSDKaggle2019.meta" / "train_curated_post_competition.csv",
              root / "FSDKaggle2019.audio_train_curated")
    if kaggle[0].is_file():
        return "kaggle", *kaggle
    if zenodo[0].is_file():
        return "zenodo", *zenodo
    raise DatasetLayoutError(
        f"No FSDKaggle2019 curated metadata under {root}: neither {kaggle[0]} nor {zenodo[0]} exists. Expected:\n"
        f"{_TAG_LAYOUT}\nDownload it with `dcasenet-hub data download fsdkaggle2019 -o DIR`."
    )


def kfold_indices(n: int, *, n_splits: int = TAG_KFOLD_SPLITS, seed: int = TAG_KFOLD_SEED,
                  fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and evaluation indices of ``KFold(n_splits, shuffle=True, random_state=seed)`` fold ``fold``.

    Reproduces scikit-learn's KFold without it: ``perm = arange(n)`` shuffled in place by
    ``np.random.RandomState(seed).shuffle``; fold sizes ``n // n_splits``, the first ``n % n_splits`` folds one
    larger; fold ``k`` evaluates ``perm[start_k:stop_k]``. Both index arrays are returned sorted ascending.

    Example:
        >>> train, evaluate = kfold_indices(4970)
        >>> len(train), len(evaluate), evaluate[:5].tolist()
        (3976, 994, [8, 12, 17, 19, 23])
    """
    if n_splits < 2 or n < n_splits:
        raise ValueError(f"KFold needs 2 <= n_splits <= n; got n_splits={n_splits}, n={n}")
    if not 0 <= fold < n_splits:
        raise ValueError(f"fold must be in 0..{n_splits - 1}; got {fold}")
    perm = np.arange(n)
    np.random.RandomState(seed).shuffle(perm)
    sizes = np.full(n_splits, n // n_splits, dtype=np.int64)
    sizes[: n % n_splits] += 1
    start = int(sizes[:fold].sum())
    stop = start + int(sizes[fold])
    evaluate = np.sort(perm[start:stop])
    mask = np.ones(n, dtype=bool)
    mask[evaluate] = False
    return np.flatnonzero(mask), evaluate


def _check_submission_order(root: Path) -> None:
    sub = root / "sample_submission.csv"
    if not sub.is_file():
        return
    with open(sub, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if tuple(h.strip() for h in header[1:]) != _labels.TAGS:
        raise ValueError(
            f"{sub}: its label columns differ from dcasenet_hub.labels.TAGS (the DCASE2019 Task 2 order); "
            "the file may be from another dataset version"
        )


def tag_items(root: str | Path, split: str, *, on_missing: str = "error") -> list[Item]:
    """Items of the authors' FSDKaggle2019 curated split (KFold(5, shuffle, seed 42), fold 0).

    Rows keep the metadata CSV order (the fold indices refer to it): ``train_curated.csv`` for the Kaggle layout,
    ``FSDKaggle2019.meta/train_curated_post_competition.csv`` for the Zenodo layout (auto-detected; the Zenodo CSV is
    assumed to list the clips in the same order, which could not be verified). Labels are matched exactly against
    :data:`dcasenet_hub.labels.TAGS` (for these 80 labels the authors' substring test gives the same result).

    Args:
        root: dataset folder (see the layouts in the error message of :func:`tag_layout`).
        split: ``"train"`` (3 976 of 4 970) or ``"evaluate"`` (994).
        on_missing: ``"error"`` or ``"skip"`` for listed clips whose wav does not exist. The fold is computed over
            all CSV rows first, so skipping does not change the split of the remaining clips.

    Returns:
        List of :class:`Item` with ``target`` = ``(80,)`` float32 multi-hot and ``name`` = file stem.

    Example:
        >>> items = tag_items("data/fsdkaggle2019", "evaluate")  # doctest: +SKIP
        >>> len(items), items[0].target.shape                    # doctest: +SKIP
        (994, (80,))
    """
    split = _split_name(split)
    base = Path(root).expanduser()
    layout, csv_path, audio_dir = tag_layout(base)
    if layout == "kaggle":
        _check_submission_order(base)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "fname" not in reader.fieldnames or "labels" not in reader.fieldnames:
            raise DatasetLayoutError(f"{csv_path}: expected a header with 'fname' and 'labels'; got {reader.fieldnames}")
        rows = [(r["fname"].strip(), r["labels"]) for r in reader if r.get("fname")]
    if len(rows) < TAG_KFOLD_SPLITS:
        raise DatasetLayoutError(f"{csv_path} has {len(rows)} rows; at least {TAG_KFOLD_SPLITS} are needed for the KFold split")
    tag_index = {t: i for i, t in enumerate(_labels.TAGS)}
    train_idx, eval_idx = kfold_indices(len(rows))
    items: list[Item] = []
    missing: list[Path] = []
    for i in (train_idx if split == "train" else eval_idx):
        fname, label_str = rows[int(i)]
        target = np.zeros(len(_labels.TAGS), dtype=np.float32)
        for label in (s.strip() for s in label_str.split(",")):
            if label not in tag_index:
                raise ValueError(f"{csv_path}: clip {fname!r} has unknown label {label!r}")
            target[tag_index[label]] = 1.0
        path = audio_dir / fname
        if not path.is_file():
            missing.append(path)
            continue
        items.append(Item(path=path, target=target, channel=None, name=Path(fname).stem))
    _check_missing(missing, "FSDKaggle2019 clips", on_missing)
    return items


# ---------------------------------------------------------------------------------------------------------------------
# SED: TAU-NIGENS Spatial Sound Events 2020, development
# ---------------------------------------------------------------------------------------------------------------------

_SED_LAYOUT = (
    "  mic_dev/fold<k>_room<r>_mix<nnn>_ov<o>.wav   (or foa_dev/; 4 channels, 24 kHz, 60 s)\n"
    "  metadata_dev/fold<k>_room<r>_mix<nnn>_ov<o>.csv   (frame,class,track,azimuth,elevation[,distance])"
)


def _read_sed_labels(csv_path: Path, n_frames: int) -> np.ndarray:
    target = np.zeros((n_frames, len(_labels.EVENTS)), dtype=np.float32)
    dropped = 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) not in (5, 6):
                raise ValueError(
                    f"{csv_path}:{line_no}: expected 5 or 6 columns (frame, class, track, azimuth, elevation[, "
                    f"distance]); got {len(row)}"
                )
            try:
                frame, cls = int(row[0]), int(row[1])
            except ValueError:
                raise ValueError(f"{csv_path}:{line_no}: frame and class must be integers; got {row[:2]}") from None
            if not 0 <= cls < len(_labels.EVENTS):
                raise ValueError(f"{csv_path}:{line_no}: class index {cls} outside 0..{len(_labels.EVENTS) - 1}")
            if not 0 <= frame < n_frames:
                dropped += 1
                continue
            target[frame, cls] = 1.0
    if dropped:
        logger.warning("%s: %d rows with frame index outside 0..%d ignored", csv_path, dropped, n_frames - 1)
    return target


def sed_items(root: str | Path, split: str, *, fmt: str = "mic", n_frames: int = SED_LABEL_FRAMES) -> list[Item]:
    """Items of the authors' TAU-NIGENS 2020 split: 4 items (channels 0..3) per recording.

    ``"train"`` = folds 3-6 (400 recordings, 1 600 items), ``"evaluate"`` = fold 1 (100 recordings, 400 items);
    ``"validation"`` = fold 2 (official validation fold; unused by the authors). Recordings are sorted by name,
    channels 0..3 consecutive. Targets come from ``metadata_dev/<name>.csv``: ``target[frame, class] = 1`` for each row
    (track, direction and distance ignored).

    Args:
        root: folder holding ``mic_dev/`` (or ``foa_dev/``) and ``metadata_dev/``.
        split: ``"train"``, ``"evaluate"`` (``"eval"``) or ``"validation"``.
        fmt: ``"mic"`` (the authors' choice) or ``"foa"``.
        n_frames: label frames per recording (600 = 60 s at 100 ms).

    Returns:
        List of :class:`Item` with ``target`` = ``(n_frames, 14)`` float32, ``channel`` 0..3 and
        ``name`` = ``"<recording>:ch<channel + 1>"``.

    Example:
        >>> items = sed_items("data/tau-nigens2020", "evaluate")  # doctest: +SKIP
        >>> len(items), items[0].name, items[0].target.shape      # doctest: +SKIP
        (400, 'fold1_room1_mix001_ov1:ch1', (600, 14))
    """
    split = _split_name(split, ("train", "evaluate", "validation"))
    if fmt not in ("mic", "foa"):
        raise ValueError(f"fmt must be 'mic' or 'foa'; got {fmt!r}")
    base = Path(root).expanduser()
    audio_dir, meta_dir = base / f"{fmt}_dev", base / "metadata_dev"
    for d in (audio_dir, meta_dir):
        if not d.is_dir():
            raise DatasetLayoutError(
                f"Missing folder {d}. Expected under {base}:\n{_SED_LAYOUT}\n"
                "Download it with `dcasenet-hub data download tau-nigens2020 -o DIR`."
            )
    folds = {"train": SED_TRAIN_FOLDS, "evaluate": SED_EVAL_FOLDS, "validation": SED_VALIDATION_FOLDS}[split]
    wavs = sorted(p for p in audio_dir.glob("fold*.wav") if _fold_of(p.stem) in folds)
    if not wavs:
        raise DatasetLayoutError(
            f"No recordings of fold(s) {', '.join(map(str, folds))} in {audio_dir} (files fold<k>_*.wav expected). "
            f"Expected layout:\n{_SED_LAYOUT}"
        )
    items: list[Item] = []
    missing: list[Path] = []
    for wav in wavs:
        csv_path = meta_dir / f"{wav.stem}.csv"
        if not csv_path.is_file():
            missing.append(csv_path)
            continue
        target = _read_sed_labels(csv_path, n_frames)
        items.extend(Item(path=wav, target=target, channel=ch, name=f"{wav.stem}:ch{ch + 1}") for ch in range(4))
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} metadata files are missing for recordings in {audio_dir} (e.g. {missing[0]}). "
            f"Expected layout:\n{_SED_LAYOUT}"
        )
    return items


def _fold_of(stem: str) -> int | None:
    head = stem.split("_", 1)[0]
    if head.startswith("fold") and head[4:].isdigit():
        return int(head[4:])
    return None
