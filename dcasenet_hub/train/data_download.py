"""Download and extract the three development datasets from Zenodo.

``download_dataset("tau2020-asc" | "fsdkaggle2019" | "tau-nigens2020", dest)`` fetches the archives of the requested
parts (streamed, with a tqdm bar, resuming a partial ``.part`` file with an HTTP Range request), checks each file's
MD5 where one is published (docs/facts.md §3; a mismatch deletes the file and raises); the download loop is the
weights' one (:func:`dcasenet_hub.hub.fetch.download`), joins split archives
(``x.z01``, ``x.z02``, ..., ``x.zip``) into one zip in pure Python, and extracts with a safety check that refuses any
member that would land outside ``dest`` (absolute paths, ``..``, symbolic links); both live in
:mod:`dcasenet_hub.train.archives`.

No MD5 is published for FSDKaggle2019 (record 3612637) and no sizes for TAU-NIGENS 2020; those files are downloaded
without an integrity check and the log says so. Set ``DCASENET_HUB_DATA_MIRROR`` (or pass ``mirror=``) to fetch
``{mirror}/{record}/{file name}`` instead of Zenodo.

Example:
    >>> from dcasenet_hub.train.data_download import download_dataset
    >>> root = download_dataset("tau-nigens2020", "data/tau-nigens2020")   # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())                              # doctest: +SKIP
    ['metadata_dev', 'mic_dev']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dcasenet_hub import _env
from dcasenet_hub._io import atomic_write_text, check_free_space
from dcasenet_hub._progress import show_progress
from dcasenet_hub.errors import (
    ChecksumMismatchError,
    DownloadError,
    OfflineError,
    UnsafeArchiveError,
)
from dcasenet_hub.hub.fetch import check_file, download
from dcasenet_hub.train.archives import (
    join_split_zip,
    safe_extract,
)

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "Archive",
    "ChecksumMismatchError",
    "DatasetSpec",
    "DownloadError",
    "OfflineError",
    "RemoteFile",
    "UnsafeArchiveError",
    "download_dataset",
    "download_file",
    "join_split_zip",
    "safe_extract",
]

logger = logging.getLogger(__name__)

#: Environment variable with a mirror base URL: files are fetched from ``{mirror}/{record}/{name}``.
MIRROR_ENV = "DCASENET_HUB_DATA_MIRROR"
_ZENODO_URL = "https://zenodo.org/record/{record}/files/{name}?download=1"
_USER_AGENT = "dcasenet-hub data download"
#: Lock file in ``dest/downloads/``: one :func:`download_dataset` run per destination at a time.
LOCK_NAME = ".download.lock"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record. ``md5``/``size`` are None where no published value is known."""

    name: str
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Archive:
    """An extractable unit: one ``.zip``, or the parts of a split zip in order (``.z01``, ``.z02``, ..., ``.zip``)."""

    name: str
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable dataset: Zenodo record, named parts (each a tuple of archives) and the default parts."""

    key: str
    title: str
    record: str
    parts: dict[str, tuple[Archive, ...]]
    default_parts: tuple[str, ...]
    note: str = ""


def zip_archive(name: str, md5: str | None = None, size: int | None = None) -> Archive:
    """A one-file zip archive of a dataset record."""
    return Archive(name.removesuffix(".zip"), (RemoteFile(name, md5, size),))


def split_archive(stem: str, md5s: Sequence[str | None], n_parts: int) -> Archive:
    """A zip archive split in ``n_parts`` files (``stem.z01`` ... ``stem.zip``)."""
    names = [f"{stem}.z{k:02d}" for k in range(1, n_parts)] + [f"{stem}.zip"]
    return Archive(stem, tuple(RemoteFile(n, m) for n, m in zip(names, md5s)))


_ASC = "TAU-urban-acoustic-scenes-2020-mobile-development"
_ASC_AUDIO = (  # (bytes, md5) of audio.1 ... audio.16 (dcase_util 0.2.20; identical md5s in soundata)
    (1726039031, "b1e85b8a908d3d6a6ab73268f385d5c8"), (1782268370, "4310a13cc2943d6ce3f70eba7ba4c784"),
    (1870468865, "ed38956c4246abb56190c1e9b602b7b8"), (1879413176, "97ab8560056b6816808dedc044dcc023"),
    (1823936584, "b50f5e0bfed33cd8e52cb3e7f815c6cb"), (1827246144, "fbf856a3a86fff7520549c899dc94372"),
    (1728630243, "0dbffe7b6e45564da649378723284062"), (1748646043, "bb6f77832bf0bd9f786f965beb251b2e"),
    (1780487215, "a65596a5372eab10c78e08a0de797c9e"), (1726068853, "2ad595819ffa1d56d2de4c7ed43205a6"),
    (1744480272, "0ad29f7040a4e6a22cfd639b3a6738e5"), (1738707195, "e5f4400c6b9697295fab4cf507155a2f"),
    (1835797785, "8855ab9f9896422746ab4c5d89d8da2f"), (1846390881, "092ad744452cd3e7de78f988a3d13020"),
    (1869032508, "4b5eb85f6592aebf846088d9df76b420"), (436971777, "2e0a89723e58a3836be019e6996ae460"),
)

#: The downloadable datasets (docs/facts.md §3).
DATASETS: dict[str, DatasetSpec] = {
    "tau2020-asc": DatasetSpec(
        key="tau2020-asc",
        title="TAU Urban Acoustic Scenes 2020 Mobile, development (27.4 GB of zips)",
        record="3819968",
        parts={
            "doc": (zip_archive(f"{_ASC}.doc.zip", "175f40dc3fec144347abad4d2962b7ae", 18066),),
            "meta": (zip_archive(f"{_ASC}.meta.zip", "6eae9db553ce48e4ea246e34e50a3cf5", 214159),),
            "audio": tuple(zip_archive(f"{_ASC}.audio.{k}.zip", md5, size)
                           for k, (size, md5) in enumerate(_ASC_AUDIO, 1)),
        },
        default_parts=("doc", "meta", "audio"),
    ),
    "fsdkaggle2019": DatasetSpec(
        key="fsdkaggle2019",
        title="FSDKaggle2019 (Zenodo layout; the authors used the curated subset)",
        record="3612637",
        parts={
            "meta": (zip_archive("FSDKaggle2019.meta.zip"),),
            "doc": (zip_archive("FSDKaggle2019.doc.zip"),),
            "audio_train_curated": (zip_archive("FSDKaggle2019.audio_train_curated.zip"),),
            "audio_test": (zip_archive("FSDKaggle2019.audio_test.zip"),),
            "audio_train_noisy": (split_archive("FSDKaggle2019.audio_train_noisy", [None] * 7, 7),),
        },
        default_parts=("meta", "doc", "audio_train_curated"),
        note="no MD5 or size is published for these files in any source we could check: integrity is not verified",
    ),
    "tau-nigens2020": DatasetSpec(
        key="tau-nigens2020",
        title="TAU-NIGENS Spatial Sound Events 2020 (DCASE2020 Task 3)",
        record="4064792",
        parts={
            "mic_dev": (split_archive("mic_dev",
                                     ["3a2b0986d2a302498cd874d584d17689", "92f715cb74406d5556bce0fdf27f54e4",
                                      "9174daca52f393425120308ab5c14477"], 3),),
            "foa_dev": (split_archive("foa_dev",
                                     ["86acab46854a57f5ba3e5b80a19c01b5", "363c8c159be003271c05a71a57b2ced4",
                                      "6aad48e7346884b3929245e7553fd97d"], 3),),
            "metadata_dev": (zip_archive("metadata_dev.zip", "979f5551e987ed247404b80a2f1c3db1"),),
            "mic_eval": (zip_archive("mic_eval.zip", "bca79b5f71b46e4cb191c54a611348a4"),),
            "foa_eval": (zip_archive("foa_eval.zip", "24c6ce2441df242d4e3b61e9bb27d0d7"),),
            "metadata_eval": (zip_archive("metadata_eval.zip", "f3584166d9a63b43c1e301b6fb722293"),),
        },
        default_parts=("mic_dev", "metadata_dev"),
        note="MD5s from soundata (record 4064792); file sizes are not published",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Single files: the package's one download loop (dcasenet_hub.hub.fetch.download), with MD5 and size
# ---------------------------------------------------------------------------------------------------------------------


def download_file(url: str, path: str | Path, *, md5: str | None = None, size: int | None = None,
                  progress: bool = True, retries: int = 5, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` (streamed, resumable) and check its size and MD5 when given.

    Data goes to ``path + ".part"`` first and is renamed to ``path`` only after the checks pass; the download itself
    is :func:`dcasenet_hub.hub.fetch.download` (the weights' loop: resume, retries, fail fast without network). An
    existing ``path`` that passes the checks is kept without downloading.

    Args:
        url: http(s) URL.
        path: destination file.
        md5: expected hex MD5, or None (no check; a warning is logged).
        size: expected size in bytes, or None.
        progress: show a tqdm bar.
        retries: attempts after one that broke off.
        timeout: socket timeout in seconds.

    Returns:
        ``path``.

    Raises:
        OfflineError: the host cannot be reached or sent nothing (within seconds, not after retries).
        DownloadError: an HTTP error, or every attempt broke off (the message says whether a ``.part`` file is
            kept for a later resume).
        ChecksumMismatchError: a size or MD5 mismatch (the file is deleted).
        DiskSpaceError: the published size does not fit on the disk of ``path`` (checked before downloading).

    Example:
        >>> download_file("https://zenodo.org/record/4064792/files/metadata_dev.zip?download=1", "metadata_dev.zip",
        ...               md5="979f5551e987ed247404b80a2f1c3db1")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file():
        problem = check_file(path, digest=md5, algorithm="md5", size=size, progress=progress)
        if problem is None:
            logger.info("%s: already downloaded", path.name)
            return path
        logger.warning("%s: %s; downloading it again", path.name, problem)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    if size is not None:  # fail before the first byte, not hours later on a full disk
        done = part.stat().st_size if part.is_file() else 0
        check_free_space(path.parent, max(0, size - done), what=f"downloading {path.name}")
    download(url, part, digest=md5, algorithm="md5", size=size, attempts=retries + 1, timeout=timeout,
             desc=path.name, progress=progress, user_agent=_USER_AGENT,
             fix=f"The server or mirror serves a different file; check {MIRROR_ENV}, then run the command again.")
    os.replace(part, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Whole datasets
# ---------------------------------------------------------------------------------------------------------------------


def _url(record: str, name: str, mirror: str | None) -> str:
    if mirror:
        return f"{mirror.rstrip('/')}/{record}/{name}"
    return _ZENODO_URL.format(record=record, name=name)


def download_dataset(
    name: str,
    dest: str | Path,
    *,
    parts: Sequence[str] | None = None,
    mirror: str | None = None,
    keep_archives: bool = False,
    progress: bool | None = True,
    retries: int = 5,
) -> Path:
    """Download, check and extract a development dataset into ``dest``.

    Archives go to ``dest/downloads/``; after a successful extraction a marker ``dest/downloads/<archive>.extracted``
    is written and the archives are deleted (unless ``keep_archives``), so a second run skips finished archives and
    resumes unfinished ones. A file lock (``dest/downloads/.download.lock``) makes a concurrent run into the same
    ``dest`` wait until the first has finished (it then skips what the first extracted).

    Args:
        name: ``"tau2020-asc"``, ``"fsdkaggle2019"`` or ``"tau-nigens2020"`` (see :data:`DATASETS`).
        dest: destination folder.
        parts: parts to fetch (default: the dataset's ``default_parts``: everything the authors' training needs:
            ASC doc/meta/audio; FSDKaggle2019 meta/doc/audio_train_curated; TAU-NIGENS mic_dev/metadata_dev).
        mirror: base URL replacing Zenodo (``{mirror}/{record}/{file}``); default ``$DCASENET_HUB_DATA_MIRROR``.
        keep_archives: keep the downloaded zips after extraction.
        progress: show tqdm bars (``None``: when stderr is a terminal).
        retries: retries per file after a dropped connection.

    Returns:
        The folder to give to the dataset reader (``dest/TAU-urban-acoustic-scenes-2020-mobile-development`` for
        ASC when the archives hold that folder, else ``dest``).

    Raises:
        ValueError: unknown dataset or part.
        OfflineError: no network (within seconds).
        DownloadError: a download failed, or a checksum did not match (:class:`ChecksumMismatchError`).
        UnsafeArchiveError: an archive member would escape ``dest``.

    Example:
        >>> download_dataset("fsdkaggle2019", "data/fsdkaggle2019")  # doctest: +SKIP
        PosixPath('data/fsdkaggle2019')
    """
    progress = show_progress(progress)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    chosen = tuple(parts) if parts else spec.default_parts
    unknown = [p for p in chosen if p not in spec.parts]
    if unknown:
        raise ValueError(f"{name}: unknown part(s) {unknown}; available: {', '.join(spec.parts)}")
    mirror = mirror or _env.data_mirror() or None
    dest = Path(dest).expanduser()
    downloads = dest / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if spec.note:
        logger.warning("%s: %s", name, spec.note)
    from filelock import FileLock, Timeout

    # two runs into one folder would write the same .part files and extract over each other: the second waits
    lock = FileLock(str(downloads / LOCK_NAME))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        logger.warning("another download into %s is running (lock %s); waiting for it to finish", dest, lock.lock_file)
        lock.acquire()
    try:
        _download_parts(spec, chosen, dest, downloads, mirror=mirror, keep_archives=keep_archives,
                        progress=progress, retries=retries)
    finally:
        lock.release()
    if name == "tau2020-asc" and (dest / _ASC).is_dir():
        return dest / _ASC
    return dest


def _download_parts(spec: DatasetSpec, chosen: Sequence[str], dest: Path, downloads: Path, *, mirror: str | None,
                    keep_archives: bool, progress: bool, retries: int) -> None:
    for part in chosen:
        for archive in spec.parts[part]:
            marker = downloads / f"{archive.name}.extracted"
            if marker.is_file():
                logger.info("%s: already extracted", archive.name)
                continue
            local = [
                download_file(_url(spec.record, f.name, mirror), downloads / f.name, md5=f.md5, size=f.size,
                              progress=progress, retries=retries)
                for f in archive.files
            ]
            if len(local) > 1:
                zip_path = join_split_zip(local, downloads / f"{archive.name}.joined.zip", progress=progress)
            else:
                zip_path = local[0]
            safe_extract(zip_path, dest, progress=progress, reserved=(downloads,))  # no member touches our state
            atomic_write_text(marker, "\n".join(f.name for f in archive.files) + "\n")
            if not keep_archives:
                for p in {*local, zip_path}:
                    p.unlink(missing_ok=True)
            elif zip_path not in local:
                zip_path.unlink(missing_ok=True)  # the joined copy; the parts are kept
            logger.info("%s: extracted into %s", archive.name, dest)
