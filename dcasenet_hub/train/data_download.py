"""Download and extract the three development datasets from Zenodo.

``download_dataset("tau2020-asc" | "fsdkaggle2019" | "tau-nigens2020", dest)`` fetches the archives of the requested
parts (streamed, with a tqdm bar, resuming a partial ``.part`` file with an HTTP Range request), checks each file's
MD5 where one is published (docs/facts.md §3; a mismatch deletes the file and raises), joins split archives
(``x.z01``, ``x.z02``, ..., ``x.zip``) into one zip in pure Python, and extracts with a safety check that refuses any
member that would land outside ``dest`` (absolute paths, ``..``, symbolic links).

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

import hashlib
import logging
import os
import re
import stat
import struct
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dcasenet_hub._io import atomic_write, atomic_write_text
from dcasenet_hub.errors import DownloadError, UnsafeArchiveError
from dcasenet_hub.hub.fetch import (
    NETWORK_ERRORS,
    DownloadTooLargeError,
    Transfer,
    fetch_into,
)

__all__ = [
    "DATASETS",
    "MIRROR_ENV",
    "Archive",
    "DatasetSpec",
    "DownloadError",
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
_CHUNK = 1 << 20
_RETRY_DELAY_S = 2.0  # first back-off between retries (doubles, at most 30 s)
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


def _zip(name: str, md5: str | None = None, size: int | None = None) -> Archive:
    return Archive(name.removesuffix(".zip"), (RemoteFile(name, md5, size),))


def _split(stem: str, md5s: Sequence[str | None], n_parts: int) -> Archive:
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
            "doc": (_zip(f"{_ASC}.doc.zip", "175f40dc3fec144347abad4d2962b7ae", 18066),),
            "meta": (_zip(f"{_ASC}.meta.zip", "6eae9db553ce48e4ea246e34e50a3cf5", 214159),),
            "audio": tuple(_zip(f"{_ASC}.audio.{k}.zip", md5, size) for k, (size, md5) in enumerate(_ASC_AUDIO, 1)),
        },
        default_parts=("doc", "meta", "audio"),
    ),
    "fsdkaggle2019": DatasetSpec(
        key="fsdkaggle2019",
        title="FSDKaggle2019 (Zenodo layout; the authors used the curated subset)",
        record="3612637",
        parts={
            "meta": (_zip("FSDKaggle2019.meta.zip"),),
            "doc": (_zip("FSDKaggle2019.doc.zip"),),
            "audio_train_curated": (_zip("FSDKaggle2019.audio_train_curated.zip"),),
            "audio_test": (_zip("FSDKaggle2019.audio_test.zip"),),
            "audio_train_noisy": (_split("FSDKaggle2019.audio_train_noisy", [None] * 7, 7),),
        },
        default_parts=("meta", "doc", "audio_train_curated"),
        note="no MD5 or size is published for these files in any source we could check: integrity is not verified",
    ),
    "tau-nigens2020": DatasetSpec(
        key="tau-nigens2020",
        title="TAU-NIGENS Spatial Sound Events 2020 (DCASE2020 Task 3)",
        record="4064792",
        parts={
            "mic_dev": (_split("mic_dev", ["3a2b0986d2a302498cd874d584d17689", "92f715cb74406d5556bce0fdf27f54e4",
                                           "9174daca52f393425120308ab5c14477"], 3),),
            "foa_dev": (_split("foa_dev", ["86acab46854a57f5ba3e5b80a19c01b5", "363c8c159be003271c05a71a57b2ced4",
                                           "6aad48e7346884b3929245e7553fd97d"], 3),),
            "metadata_dev": (_zip("metadata_dev.zip", "979f5551e987ed247404b80a2f1c3db1"),),
            "mic_eval": (_zip("mic_eval.zip", "bca79b5f71b46e4cb191c54a611348a4"),),
            "foa_eval": (_zip("foa_eval.zip", "24c6ce2441df242d4e3b61e9bb27d0d7"),),
            "metadata_eval": (_zip("metadata_eval.zip", "f3584166d9a63b43c1e301b6fb722293"),),
        },
        default_parts=("mic_dev", "metadata_dev"),
        note="MD5s from soundata (record 4064792); file sizes are not published",
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Single-file download with resume and MD5
# ---------------------------------------------------------------------------------------------------------------------


def _md5(path: Path, progress: bool) -> str:
    from tqdm.auto import tqdm

    h = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"md5 {path.name}", disable=not progress, leave=False) as bar:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _verify(path: Path, remote: RemoteFile, progress: bool) -> None:
    """Raise DownloadError (and delete ``path``) if its size or MD5 differs from the published value."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        path.unlink()
        raise DownloadError(f"{remote.name}: size mismatch: expected {remote.size} bytes, got {size}; the file was "
                            "deleted, run the command again to download it anew")
    if remote.md5 is None:
        logger.warning("%s: no published MD5 is known; integrity not checked", remote.name)
        return
    got = _md5(path, progress)
    if got != remote.md5:
        path.unlink()
        raise DownloadError(f"{remote.name}: MD5 mismatch: expected {remote.md5}, got {got}; the file was deleted, "
                            "run the command again to download it anew")


def download_file(url: str, path: str | Path, *, md5: str | None = None, size: int | None = None,
                  progress: bool = True, retries: int = 5, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` (streamed, resumable) and check its size and MD5 when given.

    Data goes to ``path + ".part"`` first; an existing ``.part`` is resumed with ``Range: bytes=N-`` (a server that
    answers 200 instead of 206 makes the download restart from 0). A dropped connection is retried ``retries``
    times, each resuming where it stopped. The finished file is renamed to ``path`` only after the checks pass.
    An existing ``path`` that passes the checks is kept without downloading.

    Args:
        url: http(s) URL.
        path: destination file.
        md5: expected hex MD5, or None (no check; a warning is logged).
        size: expected size in bytes, or None.
        progress: show a tqdm bar.
        retries: attempts after a failed one.
        timeout: socket timeout in seconds.

    Returns:
        ``path``.

    Raises:
        DownloadError: HTTP error, too many failed attempts (the ``.part`` file is kept for a later resume), or a
            size/MD5 mismatch (the file is deleted).

    Example:
        >>> download_file("https://zenodo.org/record/4064792/files/metadata_dev.zip?download=1", "metadata_dev.zip",
        ...               md5="979f5551e987ed247404b80a2f1c3db1")  # doctest: +SKIP
    """
    path = Path(path)
    remote = RemoteFile(path.name, md5, size)
    if path.is_file():
        try:
            _verify(path, remote, progress)
            logger.info("%s: already downloaded", path.name)
            return path
        except DownloadError as exc:
            logger.warning("%s", exc)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        if size is not None and offset == size:
            break
        try:
            fetch_into(url, part, transfer=Transfer(), timeout=timeout, desc=path.name, progress=progress,
                       user_agent=_USER_AGENT, max_bytes=size)
            break
        except DownloadTooLargeError as exc:  # an endless or oversized body stops at the published size
            part.unlink(missing_ok=True)
            raise DownloadError(f"{exc}; the partial file was deleted. The server or mirror serves a different "
                                f"file; check {MIRROR_ENV}, then run the command again") from None
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: the .part file is complete (checked below)
                break
            if exc.code in (400, 401, 403, 404, 410) or attempt >= retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            failure: Exception = exc
        except NETWORK_ERRORS as exc:
            failure = exc
        if attempt >= retries:
            raise DownloadError(
                f"{url}: download failed after {attempt + 1} attempts ({failure}); the partial file {part} is kept, "
                "run the command again to resume"
            ) from None
        delay = min(30.0, _RETRY_DELAY_S * 2**attempt)
        attempt += 1
        logger.warning("%s: %s; retrying in %.0f s (%d/%d)", path.name, failure, delay, attempt, retries)
        time.sleep(delay)
    _verify(part, RemoteFile(path.name, md5, size), progress)
    os.replace(part, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Split zip join
# ---------------------------------------------------------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_MAX16, _MAX32 = 0xFFFF, 0xFFFFFFFF


def _read_end_records(f, file_size: int) -> tuple[int, int, int, int]:
    """``(cd_disk, cd_offset_in_disk, cd_size, n_entries)`` from the (Zip64) end of central directory records."""
    tail_len = min(file_size, _EOCD.size + 65535 + _EOCD64_LOCATOR.size)
    f.seek(file_size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0:
        raise ValueError("no end-of-central-directory record: not the last part of a zip archive")
    _, _disk, cd_disk, _n_disk, n_total, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
    loc = pos - _EOCD64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, _z64_disk, _z64_offset, _n_disks = _EOCD64_LOCATOR.unpack_from(tail, loc)
        # the Zip64 end record sits right before its locator
        rec = loc - _EOCD64.size
        if rec < 0 or tail[rec:rec + 4] != b"PK\x06\x06":
            raise ValueError("Zip64 end-of-central-directory record not found before its locator")
        (_, _sz, _v1, _v2, _d, cd_disk, _n_disk, n_total, cd_size, cd_offset) = _EOCD64.unpack_from(tail, rec)
    return cd_disk, cd_offset, cd_size, n_total


def _rewrite_central_directory(cd: bytes, n_entries: int, part_starts: list[int]) -> bytes:
    out = bytearray()
    pos = 0
    for _ in range(n_entries):
        if cd[pos:pos + 4] != b"PK\x01\x02":
            raise ValueError(f"bad central directory entry signature at offset {pos}")
        fields = list(_CENTRAL.unpack_from(cd, pos))
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        start = pos + _CENTRAL.size
        name = cd[start:start + name_len]
        extra = cd[start + name_len:start + name_len + extra_len]
        comment = cd[start + name_len + extra_len:start + name_len + extra_len + comment_len]
        pos = start + name_len + extra_len + comment_len
        compress_size, file_size, disk, offset = fields[10], fields[11], fields[15], fields[18]
        kept = bytearray()
        i = 0
        while i + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, i)
            body = extra[i + 4:i + 4 + size]
            if tag == 0x0001:  # Zip64: values follow in this order, only for the fields set to the max value
                j = 0
                if file_size == _MAX32:
                    file_size = struct.unpack_from("<Q", body, j)[0]
                    j += 8
                if compress_size == _MAX32:
                    compress_size = struct.unpack_from("<Q", body, j)[0]
                    j += 8
                if offset == _MAX32:
                    offset = struct.unpack_from("<Q", body, j)[0]
                    j += 8
                if disk == _MAX16:
                    disk = struct.unpack_from("<L", body, j)[0]
            else:
                kept += extra[i:i + 4 + size]
            i += 4 + size
        if disk >= len(part_starts):
            raise ValueError(f"entry {name!r} starts on disk {disk + 1} but only {len(part_starts)} parts were given")
        absolute = part_starts[disk] + offset
        zip64 = b""
        fields[11] = min(_MAX32, file_size)
        fields[10] = min(_MAX32, compress_size)
        fields[18] = min(_MAX32, absolute)
        for value, header_value in ((file_size, fields[11]), (compress_size, fields[10]), (absolute, fields[18])):
            if header_value == _MAX32:
                zip64 += struct.pack("<Q", value)
        if zip64:
            kept += struct.pack("<HH", 0x0001, len(zip64)) + zip64
        fields[13] = len(kept)
        fields[15] = 0
        out += _CENTRAL.pack(*fields) + name + bytes(kept) + comment
    return bytes(out)


def join_split_zip(parts: Sequence[str | Path], out: str | Path, *, progress: bool = True) -> Path:
    """Join a split zip (``x.z01``, ``x.z02``, ..., ``x.zip``, in that order) into one ordinary zip file.

    The parts are concatenated, then the central directory is rewritten with every entry's (disk, offset) turned
    into an absolute offset and all disk numbers set to 0 (the same result as ``zip -s 0``); Zip64 fields are kept
    or added where offsets need them. The output opens with :mod:`zipfile`.

    Args:
        parts: the part files in order, the ``.zip`` (holding the end of the central directory) last.
        out: the joined archive to write (atomically).
        progress: show a tqdm bar.

    Returns:
        ``out``.

    Raises:
        ValueError: the parts do not form a valid split archive.

    Example:
        >>> join_split_zip(["mic_dev.z01", "mic_dev.z02", "mic_dev.zip"], "mic_dev_joined.zip")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    parts = [Path(p) for p in parts]
    out = Path(out)
    sizes = [p.stat().st_size for p in parts]
    starts = [sum(sizes[:k]) for k in range(len(parts))]

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as dst, tqdm(total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024,
                                          desc=f"join {out.name}", disable=not progress, leave=False) as bar:
            for p in parts:
                with open(p, "rb") as src:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        dst.write(block)
                        bar.update(len(block))
        with open(tmp, "r+b") as f:
            cd_disk, cd_offset, cd_size, n_entries = _read_end_records(f, sum(sizes))
            if cd_disk >= len(parts):
                raise ValueError(f"the central directory is on disk {cd_disk + 1} but only {len(parts)} parts exist")
            cd_start = starts[cd_disk] + cd_offset
            f.seek(cd_start)
            cd = _rewrite_central_directory(f.read(cd_size), n_entries, starts)
            f.seek(cd_start)
            f.truncate()
            f.write(cd)
            end = cd_start + len(cd)
            if n_entries >= _MAX16 or len(cd) >= _MAX32 or cd_start >= _MAX32:
                f.write(_EOCD64.pack(b"PK\x06\x06", _EOCD64.size - 12, 45, 45, 0, 0, n_entries, n_entries,
                                     len(cd), cd_start))
                f.write(_EOCD64_LOCATOR.pack(b"PK\x06\x07", 0, end, 1))
                f.write(_EOCD.pack(b"PK\x05\x06", 0, 0, _MAX16, _MAX16, _MAX32, _MAX32, 0))
            else:
                f.write(_EOCD.pack(b"PK\x05\x06", 0, 0, n_entries, n_entries, len(cd), cd_start, 0))

    try:
        atomic_write(out, writer)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"{parts[-1]}: not a valid split zip archive ({exc})") from None
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------------------------------


def _check_member(info: zipfile.ZipInfo, dest: Path, archive: Path) -> Path:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a symbolic link; refusing to extract the archive")
    pieces = re.split(r"[\\/]+", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in pieces:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside {dest} (absolute path or '..'); refusing to extract"
        )
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise UnsafeArchiveError(f"{archive}: member {name!r} resolves to {target}, outside {dest}; refusing to extract")
    return target


#: Extraction bound (zip bombs): the members' total uncompressed size may be at most this many times the archive's
#: size, or ``MIN_EXTRACT_BOUND`` bytes if that is larger. The development datasets are mostly audio, which zip
#: barely compresses (their archives expand by less than 1.2x; metadata zips by about 10x).
MAX_EXPANSION_RATIO = 50
MIN_EXTRACT_BOUND = 256 << 20


def extract_bound(archive_size: int) -> int:
    """Most uncompressed bytes :func:`safe_extract` accepts from an archive of ``archive_size`` bytes.

    Example:
        >>> extract_bound(1 << 30) == 50 << 30
        True
    """
    return max(MAX_EXPANSION_RATIO * archive_size, MIN_EXTRACT_BOUND)


def safe_extract(archive: str | Path, dest: str | Path, *, progress: bool = True,
                 max_bytes: int | None = None) -> list[Path]:
    """Extract a zip archive into ``dest`` after checking that no member escapes it and that it is no zip bomb.

    Every member is checked before anything is written: absolute paths, drive letters, ``..`` components,
    symbolic links and paths resolving outside ``dest`` (e.g. through an existing symlink) are refused, and so is
    an archive whose members declare more than ``max_bytes`` uncompressed bytes in total (default
    :func:`extract_bound` of the archive's size). While writing, a member that yields more bytes than it declared is
    refused too. Files are written atomically; their CRC is checked by :mod:`zipfile` while reading.

    Args:
        archive: the zip file.
        dest: destination folder (created).
        progress: show a tqdm bar over the uncompressed bytes.
        max_bytes: bound on the total uncompressed size (default ``extract_bound(archive size)``).

    Returns:
        The extracted file paths.

    Raises:
        UnsafeArchiveError: a member would escape ``dest``, or the archive expands past ``max_bytes`` (nothing
            extracted in either case).
        zipfile.BadZipFile: corrupt archive.

    Example:
        >>> safe_extract("metadata_dev.zip", "data/tau-nigens2020")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    archive = Path(archive)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    written: list[Path] = []
    bound = extract_bound(archive.stat().st_size) if max_bytes is None else max_bytes
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        targets = [_check_member(info, dest, archive) for info in infos]
        total = sum(i.file_size for i in infos)
        if total > bound:
            raise UnsafeArchiveError(
                f"{archive}: its members expand to {total} bytes, more than the bound of {bound} bytes "
                f"({MAX_EXPANSION_RATIO}x the archive size, at least {MIN_EXTRACT_BOUND} bytes); refusing to extract "
                "a possible zip bomb. If the archive is genuine, extract it with safe_extract(..., max_bytes=N)"
            )
        with tqdm(total=sum(i.file_size for i in infos), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"extract {archive.name}", disable=not progress, leave=False) as bar:
            for info, target in zip(infos, targets):
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue

                def write(tmp: Path, info: zipfile.ZipInfo = info) -> None:
                    n = 0
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        for block in iter(lambda: src.read(_CHUNK), b""):
                            n += len(block)
                            if n > info.file_size:  # zipfile stops at the declared size; never trust it alone
                                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} expands past its "
                                                         f"declared {info.file_size} bytes; refusing to extract")
                            dst.write(block)
                            bar.update(len(block))

                atomic_write(target, write)
                written.append(target)
    return written


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
    progress: bool = True,
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
        progress: show tqdm bars.
        retries: retries per file after a dropped connection.

    Returns:
        The folder to give to the dataset reader (``dest/TAU-urban-acoustic-scenes-2020-mobile-development`` for
        ASC when the archives hold that folder, else ``dest``).

    Raises:
        ValueError: unknown dataset or part.
        DownloadError: a download failed or a checksum did not match.
        UnsafeArchiveError: an archive member would escape ``dest``.

    Example:
        >>> download_dataset("fsdkaggle2019", "data/fsdkaggle2019")  # doctest: +SKIP
        PosixPath('data/fsdkaggle2019')
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    chosen = tuple(parts) if parts else spec.default_parts
    unknown = [p for p in chosen if p not in spec.parts]
    if unknown:
        raise ValueError(f"{name}: unknown part(s) {unknown}; available: {', '.join(spec.parts)}")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
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
            safe_extract(zip_path, dest, progress=progress)
            atomic_write_text(marker, "\n".join(f.name for f in archive.files) + "\n")
            if not keep_archives:
                for p in {*local, zip_path}:
                    p.unlink(missing_ok=True)
            elif zip_path not in local:
                zip_path.unlink(missing_ok=True)  # the joined copy; the parts are kept
            logger.info("%s: extracted into %s", archive.name, dest)
