"""Data preparation for training: convert every clip to 24 kHz 16-bit and cache what training and evaluation read.

:func:`prepare` (also :func:`prepare_splits`, :func:`prepare_items`) converts each file once, as the paper did
(section 4.1: the front-end's resampler, then rounding to 16-bit PCM), and stores what its split is read for:

* training files and the tag and event evaluation files: the **un-normalised** log-mel of the whole file as ``.npy``
  (:func:`cache_file`), which :mod:`dcasenet_hub.train.torch_data` crops and normalises, so epochs never decode audio;
* scene evaluation files (:data:`KEEP_AUDIO_SPLITS`): only the 24 kHz 16-bit WAV (:func:`audio_file`), because the
  scene evaluation cuts its crops from the waveform as inference does.

Each cache folder (:func:`feature_dir`) has a ``manifest.json`` of the front-end settings; a cache made with other
settings is refused. A ``.source`` record beside each cached file holds the SHA-256 of its audio, hashed before
decoding, and the audio's stat stamp (size, mtime_ns, inode, ctime_ns). A file is skipped only while the record vouches
for the content the audio has now (:func:`is_current`, :func:`audio_is_current`): the same stamp, at the cost of a
``stat`` (the kernel sets ctime on every change and users cannot set it), or else the same size and SHA-256, after
which the record takes the new stamp. So an interrupted preparation continues, audio replaced under its old size and
mtime (``cp -p``, ``rsync -t``) is converted again, and audio only touched is hashed once, not converted. A record of
size and mtime_ns only vouches while both match and the audio's ctime is earlier than the record's own mtime (the
audio is unchanged since), and is then rewritten with the hash. ``keep_audio=True`` also keeps the WAV of the other
files. Layout and sizes on the real data: docs/training.md, "Data preparation".

Example:
    >>> from dcasenet_hub.train.prepare import prepare
    >>> report = prepare(asc_root="data/TAU-urban-acoustic-scenes-2020-mobile-development",
    ...                  cache_dir="features", workers=4)                   # doctest: +SKIP
    >>> report.prepared["asc"]                                              # doctest: +SKIP
    16935
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub import _env
from dcasenet_hub._io import recorded_stamp, stamp_matches, stat_now, stat_stamp
from dcasenet_hub._progress import progress_bar, show_progress
from dcasenet_hub.config import FrontendConfig

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
#: Environment variable that overrides the default cache folder.
CACHE_ENV = "DCASENET_HUB_FEATURES"
_TASK_DATA = {
    "asc": "TAU Urban Acoustic Scenes 2020 Mobile, development",
    "tag": "FSDKaggle2019 curated",
    "sed": "TAU-NIGENS Spatial Sound Events 2020, development",
}


def default_cache_root() -> Path:
    """``$DCASENET_HUB_FEATURES`` or ``~/.cache/dcasenet_hub/features``."""
    return _env.feature_cache() or Path.home() / ".cache" / "dcasenet_hub" / "features"


def feature_dir(cache_root: str | Path, task: str, root: str | Path) -> Path:
    """The cache folder of one dataset root: ``cache_root/<task>-<12 hex digits of the resolved root>``."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(cache_root) / f"{task}-{digest}"


def cache_file(task_dir: str | Path, root: str | Path, audio_path: str | Path) -> Path:
    """Where the features of ``audio_path`` (a file under ``root``) are cached."""
    audio_path = Path(audio_path)
    try:
        rel = audio_path.resolve().relative_to(Path(root).resolve())
    except ValueError:  # a file outside the root: keep it apart by a hash of its absolute path
        rel = Path("_outside") / hashlib.sha1(str(audio_path.resolve()).encode()).hexdigest()[:16] / audio_path.name
    return Path(task_dir) / rel.with_name(rel.name + ".npy")


def audio_file(task_dir: str | Path, root: str | Path, audio_path: str | Path) -> Path:
    """Where the 24 kHz 16-bit WAV of ``audio_path`` is kept (``task_dir/audio24k/<path relative to root>.wav``)."""
    rel = cache_file(task_dir, root, audio_path).relative_to(task_dir)
    return Path(task_dir) / "audio24k" / rel.with_suffix("").with_suffix(".wav")


#: Scene evaluation split names whose 24 kHz audio is kept (see :func:`audio_file`).
KEEP_AUDIO_SPLITS = {"asc": ("eval", "evaluate", "evaluation")}


#: Suffix of the record beside a cached file: the SHA-256 of the source audio that was converted and its stat stamp.
SOURCE_SUFFIX = ".source"
def _record(path: Path) -> Path:
    """The source record beside a cached file (``x.npy.source``, ``x.wav.source``)."""
    return path.with_name(path.name + SOURCE_SUFFIX)


def _read_record(path: Path) -> Any:
    """The parsed record beside ``path`` (``None`` when there is none or it is not JSON)."""
    try:
        return json.loads(_record(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _record_text(st: os.stat_result, racy: bool, sha256: str) -> str:
    return json.dumps({**recorded_stamp(st, racy), "sha256": sha256}) + "\n"


def _sha256(audio_path: str | Path, st: os.stat_result, digests: dict[tuple, str] | None) -> str | None:
    """SHA-256 of ``audio_path`` (``None`` when it cannot be read), whose stat just before was ``st``.

    ``digests`` keeps it by path and stamp: a second check of the same file reuses it only while the stamp is the
    one taken before that hash.
    """
    from dcasenet_hub.hub.fetch import sha256_file

    key = (str(audio_path), *stat_stamp(st).values())
    if digests is not None and key in digests:
        return digests[key]
    try:
        digest = sha256_file(Path(audio_path))
    except OSError:
        return None
    if digests is not None:
        digests[key] = digest
    return digest


def _rewrite_record(path: Path, st: os.stat_result, racy: bool, sha256: str) -> None:
    """Write the record of ``path`` anew; a cache that cannot be written is only checked more slowly next time."""
    from dcasenet_hub._io import atomic_write_text

    try:
        atomic_write_text(_record(path), _record_text(st, racy, sha256))
    except OSError as exc:
        logger.debug("cannot rewrite the source record of %s (%s)", path, exc)


def _legacy_matches(path: Path, audio_path: str | Path, have: dict[str, Any], st: os.stat_result, racy: bool,
                    digests: dict[tuple, str] | None) -> bool:
    """Whether a record of size and mtime_ns only vouches for ``audio_path``; if so it is rewritten with the hash.

    Size and mtime_ns must match and the audio must not have changed since the record was written: its ctime is
    earlier than the record's own mtime (strictly: a change in the same timestamp tick cannot be ordered).
    """
    if have.get("size") != st.st_size or have.get("mtime_ns") != st.st_mtime_ns:
        return False
    try:
        written = _record(path).stat().st_mtime_ns
    except OSError:
        return False
    if st.st_ctime_ns >= written:
        return False
    digest = _sha256(audio_path, st, digests)
    try:
        after = os.stat(audio_path)
    except OSError:
        return False
    # the hash stands for the converted content only if the file did not change while it was read
    if digest is None or stat_stamp(after) != stat_stamp(st):
        return False
    _rewrite_record(path, st, racy, digest)
    return True


def _record_matches(path: Path, audio_path: str | Path, digests: dict[tuple, str] | None = None) -> bool | None:
    """Whether the record beside ``path`` vouches for ``audio_path`` as it is now; ``None`` without a readable record.

    The same stamp vouches at the cost of a ``stat``. Another stamp with the same size vouches when the file's
    SHA-256 equals the recorded one; the record then gets the new stamp, so the next check is a ``stat`` again.
    """
    have = _read_record(path)
    if have is None:
        return None
    try:
        st, racy = stat_now(audio_path)  # taken before hashing and recorded: a change during the hash fails the next check
    except OSError:
        return False
    if not isinstance(have, dict):
        return False
    recorded = have.get("sha256")
    if not isinstance(recorded, str):
        return _legacy_matches(path, audio_path, have, st, racy, digests)
    if stamp_matches(have, st):
        return True
    if have.get("size") != st.st_size or _sha256(audio_path, st, digests) != recorded:
        return False
    if not racy:  # a racy stamp would not spare the next check its hash
        _rewrite_record(path, st, False, recorded)
    return True


def is_current(out: Path, audio_path: str | Path, *, digests: dict[tuple, str] | None = None) -> bool:
    """Whether the cached features ``out`` were computed from the content ``audio_path`` has now.

    Args:
        out: The cached ``.npy``.
        audio_path: Its source audio.
        digests: Memo of the SHA-256 computed by these checks, shared by the checks of one file so that an
            unchanged file is read at most once.

    Features without a record (a half-written entry) are not current.
    """
    return out.is_file() and bool(_record_matches(out, audio_path, digests))


def audio_is_current(wav: Path, out: Path, audio_path: str | Path, *,
                     digests: dict[tuple, str] | None = None) -> bool:
    """Whether the kept WAV ``wav`` was converted from the content ``audio_path`` has now (``digests``: see
    :func:`is_current`).

    Its own record (``wav.source``) decides. A WAV without one comes from a cache prepared before the scene
    evaluation files went without features: that preparation wrote the WAV, then the features ``out``, then their
    record, in one conversion of the same read, so the features' record (:func:`is_current`) vouches for it.

    Example:
        >>> from pathlib import Path
        >>> audio_is_current(Path("missing.wav"), Path("missing.npy"), "missing.flac")
        False
    """
    if not wav.is_file():
        return False
    own = _record_matches(wav, audio_path, digests)
    return own if own is not None else is_current(out, audio_path, digests=digests)


@dataclass
class PrepareReport:
    """What :func:`prepare` did.

    Attributes:
        dirs: Cache folder per task.
        prepared: Files converted in this call, per task.
        skipped: Files already cached, per task.
        failed: ``(file, reason)`` of files that could not be read (the others are cached).
    """

    dirs: dict[str, Path] = field(default_factory=dict)
    prepared: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _manifest(task: str, root: Path, config: FrontendConfig) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "task": task, "data": _TASK_DATA[task], "root": str(root.resolve()),
            "features": "log-mel, not normalised, (channels, n_mels, frames) float32",
            "audio": "resampled to frontend.sample_rate and rounded to 16-bit PCM", "frontend": config.to_dict()}


def _check_manifest(task_dir: Path, wanted: dict[str, Any]) -> None:
    from dcasenet_hub._io import atomic_write_text

    path = task_dir / MANIFEST_NAME
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"Unreadable feature cache manifest {path} ({exc}); delete {task_dir} and prepare again")
        if have.get("format") != wanted["format"] or have.get("frontend") != wanted["frontend"]:
            raise ValueError(
                f"The feature cache {task_dir} was made with other front-end settings or an older format. "
                f"Delete it or pass another --cache-dir."
            )
        return
    task_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def task_items(task: str, root: str | Path, split: str) -> list[Any]:
    """Items of one split through the dataset readers of :mod:`dcasenet_hub.train.datasets`."""
    from dcasenet_hub.train import datasets

    reader = {"asc": datasets.asc_items, "tag": datasets.tag_items, "sed": datasets.sed_items}[task]
    return list(reader(root, split))


def _convert_one(task: str, root: str, audio_path: str, task_dir: str, keep_audio: bool,
                 config_dict: dict[str, Any], features: bool = True) -> tuple[str, str | None]:
    """Convert one file; returns ``(path, error or None)``. Runs in worker processes too."""
    import numpy as np

    from dcasenet_hub._io import atomic_write, atomic_write_text
    from dcasenet_hub.audio import AudioLoadError, load_audio, log_mel

    config = FrontendConfig.from_dict(config_dict)
    out = cache_file(task_dir, root, audio_path)
    # stamp, then hash, then decode: an edit during the conversion leaves a record that no longer matches the file
    try:
        st, racy = stat_now(audio_path)
    except OSError:
        st, racy = None, False
    digest = _sha256(audio_path, st, None) if st is not None else None
    try:
        wav, sr = load_audio(audio_path, sample_rate=config.sample_rate, mono=(task != "sed"))
    except AudioLoadError as exc:
        return audio_path, str(exc)
    wav = np.atleast_2d(wav)
    pcm = np.clip(np.round(wav.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    # a file too short for the STFT fails here, before anything is written; without features only its first
    # n_fft + 1 samples go through the front-end: the whole file when it is too short, so the same error
    head = pcm if features else pcm[..., :config.n_fft + 1]
    try:
        feats = log_mel(head.astype(np.float32) / 32768.0, config=config, normalize=False).numpy().astype(np.float32)
    except ValueError as exc:
        return audio_path, str(exc)
    record = _record_text(st, racy, digest) if st is not None and digest is not None else None
    if keep_audio:
        import soundfile as sf

        wav_out = audio_file(task_dir, root, audio_path)
        atomic_write(wav_out, lambda p: sf.write(str(p), pcm.T, sr, subtype="PCM_16", format="WAV"))
        if record is not None:
            atomic_write_text(_record(wav_out), record)
    if not features:
        return audio_path, None

    def _write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, feats)

    atomic_write(out, _write)
    if record is not None:
        atomic_write_text(_record(out), record)
    return audio_path, None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def prepare_items(task: str, root: str | Path, paths: Iterable[str | Path], *, cache_dir: str | Path | None = None,
                  workers: int = 0, keep_audio: bool = False, config: FrontendConfig | None = None,
                  progress: bool = True, report: PrepareReport | None = None, features: bool = True) -> PrepareReport:
    """Cache the features (and with ``keep_audio`` the 24 kHz WAV) of ``paths`` (files under ``root``) for ``task``.

    See :func:`prepare`. ``features=False`` keeps only the WAV (what the scene evaluation reads) and needs
    ``keep_audio=True``. A file is converted again when one of the things asked for is missing or stale.

    Example:
        >>> report = prepare_items("asc", "data/asc", ["data/asc/audio/a.wav"], cache_dir="features",
        ...                        keep_audio=True, features=False)                       # doctest: +SKIP
    """
    if not features and not keep_audio:
        raise ValueError("features=False keeps nothing but the 24 kHz audio; pass keep_audio=True with it")
    config = config or FrontendConfig()
    root = Path(root)
    report = report or PrepareReport()
    task_dir = feature_dir(cache_dir or default_cache_root(), task, root)
    _check_manifest(task_dir, _manifest(task, root, config))
    report.dirs[task] = task_dir
    unique = list(dict.fromkeys(str(p) for p in paths))

    def done_already(p: str) -> bool:
        out = cache_file(task_dir, root, p)
        digests: dict[tuple, str] = {}
        return ((not features or is_current(out, p, digests=digests))
                and (not keep_audio or audio_is_current(audio_file(task_dir, root, p), out, p, digests=digests)))

    todo = [p for p in unique if not done_already(p)]
    report.skipped[task] = report.skipped.get(task, 0) + len(unique) - len(todo)
    done = 0
    args = [(task, str(root), p, str(task_dir), keep_audio, config.to_dict(), features) for p in todo]
    bar = progress_bar(enabled=progress and bool(todo), total=len(todo), desc=f"prepare {task}", unit="file",
                       leave=True)
    try:
        if workers and workers > 0 and len(todo) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker) as pool:
                for path, err in pool.map(_convert_one, *zip(*args), chunksize=4):
                    done += err is None
                    if err is not None:
                        report.failed.append((path, err))
                    bar.update(1)
        else:
            for a in args:
                path, err = _convert_one(*a)
                done += err is None
                if err is not None:
                    report.failed.append((path, err))
                bar.update(1)
    finally:
        bar.close()
    report.prepared[task] = report.prepared.get(task, 0) + done
    logger.info("%s: %d files cached in %s (%d already there)", task, done, task_dir, report.skipped[task])
    return report


def prepare(*, asc_root: str | Path | None = None, tag_root: str | Path | None = None,
            sed_root: str | Path | None = None, cache_dir: str | Path | None = None,
            splits: Sequence[str] = ("train", "eval"), workers: int = 0, keep_audio: bool = False,
            config: FrontendConfig | None = None, progress: bool | None = True) -> PrepareReport:
    """Convert the datasets to 24 kHz 16-bit and cache what training and evaluation read.

    Only the files of the authors' splits are prepared (ASC fold1 train/evaluate, TAG curated KFold fold 0, SED
    folds 1 and 3-6): the log-mel features of every file except the scene evaluation files, which keep only their
    24 kHz WAV (the scene evaluation cuts its crops from it).

    Args:
        asc_root: TAU Urban Acoustic Scenes 2020 Mobile development folder (with ``meta.csv``).
        tag_root: FSDKaggle2019 folder (``train_curated.csv`` and ``train_curated/``, or the Zenodo layout).
        sed_root: TAU-NIGENS Spatial Sound Events 2020 folder (``mic_dev/`` or ``foa_dev/``, ``metadata_dev/``).
        cache_dir: Cache folder (default :func:`default_cache_root`).
        splits: Splits to prepare.
        workers: Worker processes (0: in this process).
        keep_audio: Also keep the converted 24 kHz 16-bit WAV files of the other files.
        config: Front-end settings (default: the authors').
        progress: Show progress bars (``None``: when stderr is a terminal).

    Returns:
        A :class:`PrepareReport`; files that failed are listed in ``failed`` (the others are cached).

    Raises:
        ValueError: no root given, or the cache was made with other settings.
    """
    progress = show_progress(progress)
    roots = {"asc": asc_root, "tag": tag_root, "sed": sed_root}
    if not any(roots.values()):
        raise ValueError("Give at least one of asc_root, tag_root, sed_root")
    report = PrepareReport()
    for task, root in roots.items():
        if root is None:
            continue
        prepare_splits(task, root, splits, cache_dir=cache_dir, workers=workers, keep_audio=keep_audio,
                       config=config, progress=progress, report=report)
    return report


def data_sha256(task: str, root: str | Path, task_dir: str | Path, items: dict[str, Sequence[Any]]) -> str:
    """SHA-256 of a prepared dataset as training reads it: per split, each item's file (relative to ``root``),
    channel and target, and the SHA-256 of the audio it was prepared from (its cache record; see
    :func:`prepare_splits`, which must have run).

    Example:
        >>> data_sha256("asc", "data/asc", "features/asc-0123456789ab", {"train": []})[:12]
        'e3b0c44298fc'
    """
    import numpy as np

    h = hashlib.sha256()
    for split in sorted(items):
        kept = split in KEEP_AUDIO_SPLITS.get(task, ())
        for it in items[split]:
            cached = (audio_file if kept else cache_file)(task_dir, root, it.path)
            have = _read_record(cached)
            digest = have.get("sha256") if isinstance(have, dict) else None
            h.update(json.dumps([split, os.path.relpath(it.path, root), it.channel, digest]).encode())
            target = np.ascontiguousarray(it.target)
            h.update(f"{target.dtype}:{target.shape}".encode() + target.tobytes())
    return h.hexdigest()


def prepare_splits(task: str, root: str | Path, splits: Sequence[str], *, cache_dir: str | Path | None = None,
                   workers: int = 0, keep_audio: bool = False, config: FrontendConfig | None = None,
                   progress: bool = True, report: PrepareReport | None = None) -> tuple[PrepareReport, dict]:
    """Prepare the files of ``splits`` of one dataset: features, and for the scene evaluation files
    (:data:`KEEP_AUDIO_SPLITS`) only their 24 kHz audio.

    Returns:
        The report and the items of each split (``{split: [item, ...]}``).
    """
    report = report or PrepareReport()
    items = {s: task_items(task, root, s) for s in splits}
    keep = [s for s in splits if s in KEEP_AUDIO_SPLITS.get(task, ())]
    # (keep_audio, features, splits): the scene evaluation reads only the waveform (torch_data.EvalClips)
    groups = [(keep_audio, True, [s for s in splits if s not in keep]), (True, False, keep)]
    for keep_this, feats, names in groups:
        paths = [it.path for s in names for it in items[s]]
        if paths or not report.dirs.get(task):
            prepare_items(task, root, paths, cache_dir=cache_dir, workers=workers, keep_audio=keep_this,
                          config=config, progress=progress, report=report, features=feats)
    return report, items
