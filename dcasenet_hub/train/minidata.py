"""Miniature synthetic datasets in the three official layouts, for tests and for trying the trainer without the data.

:func:`make_mini_datasets` writes ``asc/TAU-urban-acoustic-scenes-2020-mobile-development/``, ``fsdkaggle2019/`` and
``tau-nigens2020/`` under ``dest``, with the real datasets' file names, metadata and audio formats (docs/facts.md §2);
ASC train and evaluation clips come from different locations, SED recordings are 60 s as the authors' 600-frame
alignment needs. Every class has its own sound: a carrier at a class-specific frequency (log-spaced 300 Hz to 9 kHz),
timbre and on/off rhythm over a weak noise floor; the rhythm survives the front-end's per-band normalisation, so a
network learns the classes in a few hundred iterations. Everything is deterministic from ``seed``.

Example:
    >>> from dcasenet_hub.train.minidata import make_mini_datasets
    >>> roots = make_mini_datasets("mini", seed=0)     # doctest: +SKIP
    >>> roots.asc.name                                 # doctest: +SKIP
    'TAU-urban-acoustic-scenes-2020-mobile-development'
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcasenet_hub import labels as _labels
from dcasenet_hub._io import atomic_write, atomic_write_text
from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.train.datasets import ASC_FOLDER

__all__ = ["MiniDatasets", "class_sound", "make_mini_datasets", "mini_dataset_marker"]

logger = logging.getLogger(__name__)

MARKER = ".dcasenet-mini.json"
_CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
_DEVICES = ("a", "a", "a", "b", "c", "s1", "s2", "s3")
_RHYTHMS_HZ = (2.0, 3.0, 5.0, 8.0)
_F_LOW, _F_HIGH = 300.0, 9000.0


@dataclass(frozen=True)
class MiniDatasets:
    """Roots of the generated datasets, ready for the readers of :mod:`dcasenet_hub.train.datasets`.

    Attributes:
        asc: folder with ``meta.csv`` (pass to ``asc_items``), or None if not generated.
        tag: folder with ``train_curated.csv`` (pass to ``tag_items``), or None.
        sed: folder with ``mic_dev/`` and ``metadata_dev/`` (pass to ``sed_items``), or None.
    """

    asc: Path | None
    tag: Path | None
    sed: Path | None


def class_frequency(index: int, n_classes: int) -> float:
    """The centre frequency of class ``index``'s sound (log-spaced bands, so classes differ in spectrum)."""
    if n_classes == 1:
        return 1000.0
    return float(_F_LOW * (_F_HIGH / _F_LOW) ** (index / (n_classes - 1)))


def class_sound(index: int, n_classes: int, n_samples: int, sample_rate: int,
                rng: np.random.Generator, *, depth: float = 1.0) -> np.ndarray:
    """The synthetic sound of class ``index`` (of ``n_classes``): ``(n_samples,)`` float32, peak about 1.

    Args:
        index: class index.
        n_classes: number of classes of the task (sets the frequency grid).
        n_samples: length.
        sample_rate: Hz.
        rng: random generator (jitter of frequency and phases, noise band).
        depth: depth of the on/off rhythm, 1.0 = fully off between bursts, 0.0 = steady.

    Example:
        >>> import numpy as np
        >>> class_sound(3, 10, 4410, 44100, np.random.default_rng(0)).shape
        (4410,)
    """
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    f = class_frequency(index, n_classes) * (1.0 + rng.uniform(-0.02, 0.02))
    kind = index % 3
    if kind == 0:
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    elif kind == 1:
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        if 2 * f < 0.45 * sample_rate:
            x = x + 0.5 * np.sin(2 * np.pi * 2 * f * t + rng.uniform(0, 2 * np.pi))
        x = x / 1.5
    else:
        spec = np.fft.rfft(rng.standard_normal(n_samples))
        freqs = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
        spec[(freqs < 0.93 * f) | (freqs > 1.07 * f)] = 0
        x = np.fft.irfft(spec, n_samples)
        x = x / (np.abs(x).max() + 1e-12)
    rate = _RHYTHMS_HZ[index % len(_RHYTHMS_HZ)] * (1.0 + rng.uniform(-0.05, 0.05))
    gate = (np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float64)
    ramp = max(1, int(0.005 * sample_rate))  # 5 ms smoothing against clicks
    padded = np.pad(gate, (ramp // 2, ramp - 1 - ramp // 2), mode="edge")
    cumulative = np.cumsum(np.r_[0.0, padded])
    gate = (cumulative[ramp:] - cumulative[:-ramp]) / ramp  # moving average, same length
    envelope = 1.0 - depth * (1.0 - gate)
    return (x * envelope).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], level: float = 0.003) -> np.ndarray:
    return level * rng.standard_normal(shape, dtype=np.float32)


def _write_wav(path: Path, data: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    data = np.clip(data, -0.999, 0.999)
    atomic_write(path, lambda p: sf.write(str(p), data, sample_rate, subtype="PCM_16", format="WAV"))


def _csv_text(rows: Sequence[Sequence[object]], *, delimiter: str = ",") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _prepare_folder(folder: Path, params: dict) -> bool:
    """True if ``folder`` already holds a complete mini dataset made with ``params`` (then nothing is written)."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return True
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(folder)  # our own earlier output with other parameters
    elif folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} exists and was not made by make_mini_datasets (no {MARKER}); choose an empty output "
            "folder (-o)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return False


def _make_asc(folder: Path, rng: np.random.Generator, train_per_scene: int, eval_per_scene: int,
              duration: float, progress: bool) -> Path:
    base = folder / ASC_FOLDER
    sr = 44100
    n = round(duration * sr)
    n_scenes = len(_labels.SCENES)
    meta = [("filename", "scene_label", "identifier", "source_label")]
    train = [("filename", "scene_label")]
    evaluate = [("filename", "scene_label")]
    test = [("filename",)]
    with progress_bar(enabled=progress, total=n_scenes * (train_per_scene + eval_per_scene), desc="mini ASC",
                      unit="file") as bar:
        for s, scene in enumerate(_labels.SCENES):
            for k in range(train_per_scene + eval_per_scene):
                is_train = k < train_per_scene
                city = _CITIES[(s + k) % len(_CITIES)]
                location = 1000 + 10 * s + k  # one location per clip: train/evaluate never share a location
                device = _DEVICES[int(rng.integers(len(_DEVICES)))] if is_train else "a"
                name = f"{scene}-{city}-{location}-{40000 + k}-{device}.wav"
                x = 0.25 * class_sound(s, n_scenes, n, sr, rng)
                # a weak distractor of a random other scene, and the noise floor
                other = int(rng.integers(n_scenes))
                if other != s:
                    x += 0.04 * class_sound(other, n_scenes, n, sr, rng, depth=0.0)
                x += _noise(rng, (n,))
                _write_wav(base / "audio" / name, x, sr)
                row = (f"audio/{name}", scene)
                meta.append((*row, f"{city}-{location}", device))
                (train if is_train else evaluate).append(row)
                if not is_train:
                    test.append((row[0],))
                bar.update(1)
    atomic_write_text(base / "meta.csv", _csv_text(meta, delimiter="\t"))
    setup = base / "evaluation_setup"
    atomic_write_text(setup / "fold1_train.csv", _csv_text(train, delimiter="\t"))
    atomic_write_text(setup / "fold1_evaluate.csv", _csv_text(evaluate, delimiter="\t"))
    atomic_write_text(setup / "fold1_test.csv", _csv_text(test, delimiter="\t"))
    return base


def _spread(n_used: int, n_total: int) -> list[int]:
    """``n_used`` class indices evenly spread over ``range(n_total)`` (all of them when ``n_used == n_total``)."""
    return sorted({round(v) for v in np.linspace(0, n_total - 1, n_used)})


def _make_tag(folder: Path, rng: np.random.Generator, n_clips: int, n_labels: int,
              duration_range: tuple[float, float], multi_label_fraction: float, progress: bool) -> Path:
    sr = 44100
    used = _spread(n_labels, len(_labels.TAGS))
    rows = [("fname", "labels")]
    names: set[str] = set()
    with progress_bar(enabled=progress, total=n_clips, desc="mini TAG", unit="file") as bar:
        for i in range(n_clips):
            while True:
                name = f"{int(rng.integers(0, 2**32)):08x}.wav"
                if name not in names:
                    names.add(name)
                    break
            n = round(rng.uniform(*duration_range) * sr)
            k = 2 if (len(used) > 1 and rng.random() < multi_label_fraction) else 1
            # cycle through the labels so every label has clips, then random extra labels
            first = used[i % len(used)]
            chosen = [first] + [int(c) for c in rng.choice([u for u in used if u != first], k - 1, replace=False)]
            x = _noise(rng, (n,))
            for label_index in chosen:
                seg = int(n * rng.uniform(0.6, 1.0))
                start = int(rng.integers(0, n - seg + 1))
                x[start:start + seg] += 0.25 * class_sound(used.index(label_index), len(used), seg, sr, rng)
            _write_wav(folder / "train_curated" / name, x, sr)
            rows.append((name, ",".join(_labels.TAGS[c] for c in chosen)))
            bar.update(1)
    atomic_write_text(folder / "train_curated.csv", _csv_text(rows))
    atomic_write_text(folder / "sample_submission.csv", _csv_text([("fname", *_labels.TAGS)]))
    return folder


def _sed_events(rng: np.random.Generator, overlap: int, n_frames: int,
                classes: Sequence[int]) -> list[tuple[int, int, int, int, int, int]]:
    """Events ``(onset_frame, offset_frame, class, track, azimuth, elevation)`` with at most ``overlap`` at once,
    classes drawn from ``classes``."""
    events = []
    max_len = max(2, min(60, n_frames // 3))  # 1-6 s events in 60-s recordings, shorter in short test recordings
    min_len = min(10, max_len)
    for track in range(overlap):
        frame = int(rng.integers(0, max(1, min(20, n_frames // 10))))
        while True:
            length = int(rng.integers(min_len, max_len + 1))
            if frame + length > n_frames:
                break
            cls = int(classes[int(rng.integers(len(classes)))])
            azimuth = int(rng.integers(-18, 18)) * 10
            elevation = int(rng.integers(-4, 5)) * 10
            events.append((frame, frame + length, cls, track, azimuth, elevation))
            frame += length + int(rng.integers(min(5, max_len), min(40, max_len) + 1))
    return events


def _make_sed(folder: Path, rng: np.random.Generator, folds: Sequence[int], files_per_fold: int,
              formats: Sequence[str], duration: float, n_used: int, progress: bool) -> Path:
    sr = 24000
    n_frames = round(duration * 10)
    hop = sr // 10
    n = n_frames * hop  # exactly n_frames label frames of 100 ms (60 s -> 600)
    n_classes = len(_labels.EVENTS)
    used = _spread(n_used, n_classes)
    with progress_bar(enabled=progress, total=len(folds) * files_per_fold, desc="mini SED", unit="file") as bar:
        for fold in folds:
            for k in range(files_per_fold):
                overlap = 1 + k % 2
                room = 1 + (k // 2) % 2
                name = f"fold{fold}_room{room}_mix{k + 1:03d}_ov{overlap}"
                events = _sed_events(rng, overlap, n_frames, used)
                source = np.zeros((len(events), n), dtype=np.float32)
                for e, (on, off, cls, _track, _azi, _ele) in enumerate(events):
                    seg = (off - on) * hop
                    source[e, on * hop: off * hop] = 0.25 * class_sound(cls, n_classes, seg, sr, rng, depth=0.5)
                for fmt in formats:
                    gains = rng.uniform(0.6, 1.0, size=(4, len(events))).astype(np.float32)
                    audio = np.stack([gains[ch] @ source + _noise(rng, (n,)) for ch in range(4)], axis=1)
                    _write_wav(folder / f"{fmt}_dev" / f"{name}.wav", audio, sr)
                rows = sorted(
                    (frame, cls, track, azi, ele)
                    for on, off, cls, track, azi, ele in events for frame in range(on, off)
                )
                atomic_write_text(folder / "metadata_dev" / f"{name}.csv", _csv_text(rows))
                bar.update(1)
    return folder


def mini_dataset_marker(root: str | Path) -> dict[str, Any] | None:
    """The parameters of the mini dataset ``root`` belongs to, or ``None`` when it is no mini dataset.

    :func:`make_mini_datasets` writes a marker (``.dcasenet-mini.json``) in each task folder; a dataset root is that
    folder (tags, events) or a folder inside it (scenes: ``asc/TAU-urban-acoustic-scenes-2020-mobile-development``),
    so ``root`` and its parent are looked at.

    Example:
        >>> mini_dataset_marker("data/TAU-urban-acoustic-scenes-2020-mobile-development") is None   # doctest: +SKIP
        True
    """
    root = Path(root).expanduser()
    for folder in (root, root.parent):
        marker = folder / MARKER
        if marker.is_file():
            try:
                params = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                params = {}
            return params if isinstance(params, dict) else {}
    return None


def make_mini_datasets(
    dest: str | Path,
    *,
    seed: int = 0,
    tasks: Sequence[str] = ("asc", "tag", "sed"),
    asc_train_per_scene: int = 3,
    asc_eval_per_scene: int = 1,
    asc_duration: float = 10.0,
    tag_clips: int = 50,
    tag_labels: int = 8,
    tag_duration: tuple[float, float] = (1.5, 4.0),
    tag_multi_label_fraction: float = 0.25,
    sed_folds: Sequence[int] = (1, 3, 4, 5, 6),
    sed_files_per_fold: int = 1,
    sed_formats: Sequence[str] = ("mic",),
    sed_duration: float = 60.0,
    sed_classes: int = len(_labels.EVENTS),
    progress: bool | None = True,
) -> MiniDatasets:
    """Write miniature ASC / TAG / SED datasets in the official layouts under ``dest``.

    With the defaults: ASC 10 scenes x (3 train + 1 evaluate) clips of 10 s (400 s), TAG 50 clips of 1.5-4 s over 8
    of the 80 labels (KFold fold 0: 40 train / 10 evaluate), SED one 60-s 4-channel recording in each of folds 1, 3, 4,
    5, 6 (train 16 items, evaluate 4); about 100 MB. A dataset folder that already holds a mini dataset made with
    the same arguments is reused as is (fast); one made with other arguments is regenerated.

    Args:
        dest: output folder (created).
        seed: random seed; the output is deterministic given the seed and sizes.
        tasks: which datasets to make, any of ``"scene"``, ``"tags"``, ``"events"`` (or ``"asc"``, ``"tag"``,
            ``"sed"``).
        asc_train_per_scene: ASC clips per scene in ``fold1_train.csv``.
        asc_eval_per_scene: ASC clips per scene in ``fold1_evaluate.csv``.
        asc_duration: ASC clip length in seconds (the real data: 10 s; the trainer's crops need >= 5 s).
        tag_clips: number of TAG clips (>= 5 for the 5-fold split).
        tag_labels: how many of the 80 labels are used (evenly spread over the label list).
        tag_duration: (min, max) TAG clip length in seconds.
        tag_multi_label_fraction: share of TAG clips with two labels.
        sed_folds: SED folds to write (the authors use 1 for evaluation and 3-6 for training; 2 is unused).
        sed_files_per_fold: 60-s recordings per fold (alternating ov1 / ov2).
        sed_formats: ``("mic",)``, ``("foa",)`` or both (the synthetic "foa" is just another channel mix).
        sed_duration: seconds per SED recording. The real recordings and the authors' evaluation alignment
            (3000 feature frames -> 600 label frames) assume 60 s; shorter recordings (labels
            ``round(10 * sed_duration)`` frames) only serve fast tests, and :func:`~dcasenet_hub.train.datasets.sed_items`
            still returns 600-frame targets (zero after the end of the audio).
        sed_classes: how many of the 14 event classes occur (evenly spread over the label list; the model still
            predicts all 14). Fewer classes give each class more events, which short learning checks need.
        progress: show tqdm progress bars (``None``: when stderr is a terminal).

    Returns:
        :class:`MiniDatasets` with the three roots (None for tasks not requested).

    Raises:
        FileExistsError: a target folder exists, is not empty and was not made by this function.
        ValueError: invalid sizes.

    Example:
        >>> roots = make_mini_datasets(tmp, tasks=("asc",), asc_train_per_scene=1, asc_eval_per_scene=1)  # doctest: +SKIP
    """
    progress = show_progress(progress)
    from dcasenet_hub.train.tasks import task_keys

    tasks = task_keys(tasks)  # scene/tags/events or asc/tag/sed (raises ValueError naming the accepted names)
    if asc_train_per_scene < 1 or asc_eval_per_scene < 1 or asc_duration <= 0:
        raise ValueError("asc_train_per_scene and asc_eval_per_scene must be >= 1 and asc_duration > 0")
    if tag_clips < 5 or not 1 <= tag_labels <= len(_labels.TAGS):
        raise ValueError(f"tag_clips must be >= 5 and tag_labels in 1..{len(_labels.TAGS)}")
    if not 0 < tag_duration[0] <= tag_duration[1]:
        raise ValueError(f"tag_duration must be (min, max) with 0 < min <= max; got {tag_duration}")
    if sed_files_per_fold < 1 or not sed_folds or any(f not in range(1, 7) for f in sed_folds):
        raise ValueError("sed_files_per_fold must be >= 1 and sed_folds a non-empty subset of 1..6")
    if sed_duration < 1.0 or abs(sed_duration * 10 - round(sed_duration * 10)) > 1e-9:
        raise ValueError(f"sed_duration must be >= 1 s and a multiple of 0.1 s; got {sed_duration}")
    if not 1 <= sed_classes <= len(_labels.EVENTS):
        raise ValueError(f"sed_classes must be in 1..{len(_labels.EVENTS)}; got {sed_classes}")
    if not sed_formats or any(f not in ("mic", "foa") for f in sed_formats):
        raise ValueError(f"sed_formats must hold 'mic' and/or 'foa'; got {sed_formats}")
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(3)  # independent streams: one task's sizes don't change another's data
    roots: dict[str, Path | None] = {"asc": None, "tag": None, "sed": None}

    if "asc" in tasks:
        params = {"seed": seed, "train": asc_train_per_scene, "eval": asc_eval_per_scene, "duration": asc_duration}
        folder = dest / "asc"
        if not _prepare_folder(folder, params):
            _make_asc(folder, np.random.default_rng(seeds[0]), asc_train_per_scene, asc_eval_per_scene,
                      asc_duration, progress)
            atomic_write_text(folder / MARKER, json.dumps(params))
        roots["asc"] = folder / ASC_FOLDER
    if "tag" in tasks:
        params = {"seed": seed, "clips": tag_clips, "labels": tag_labels, "duration": list(tag_duration),
                  "multi": tag_multi_label_fraction}
        folder = dest / "fsdkaggle2019"
        if not _prepare_folder(folder, params):
            _make_tag(folder, np.random.default_rng(seeds[1]), tag_clips, tag_labels, tuple(tag_duration),
                      tag_multi_label_fraction, progress)
            atomic_write_text(folder / MARKER, json.dumps(params))
        roots["tag"] = folder
    if "sed" in tasks:
        params = {"seed": seed, "folds": list(sed_folds), "files": sed_files_per_fold, "formats": list(sed_formats),
                  "duration": sed_duration}
        if sed_classes != len(_labels.EVENTS):  # keeps the marker of full-label datasets unchanged
            params["classes"] = sed_classes
        folder = dest / "tau-nigens2020"
        if not _prepare_folder(folder, params):
            _make_sed(folder, np.random.default_rng(seeds[2]), list(sed_folds), sed_files_per_fold,
                      list(sed_formats), sed_duration, sed_classes, progress)
            atomic_write_text(folder / MARKER, json.dumps(params))
        roots["sed"] = folder
    logger.info("mini datasets under %s", dest)
    return MiniDatasets(**roots)
