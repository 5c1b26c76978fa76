"""Archives of the dataset downloads: joining split zips (``x.z01`` ... ``x.zip``) and extracting them safely.

Split archives are joined in pure Python (the central directory's offsets rewritten); extraction refuses any member
that would land outside the destination (absolute paths, ``..``, symbolic links) and stops an archive that expands
past :data:`MAX_EXPANSION_RATIO` times its size. Used by :mod:`dcasenet_hub.train.data_download`.

Example:
    >>> from dcasenet_hub.train.archives import join_split_zip, safe_extract
    >>> safe_extract(join_split_zip(["a.z01", "a.zip"], "a-joined.zip"), "data")   # doctest: +SKIP
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

from dcasenet_hub._io import atomic_write, check_free_space
from dcasenet_hub.errors import UnsafeArchiveError

_CHUNK = 1 << 20

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
    check_free_space(out.parent, sum(sizes), what=f"joining the parts of {out.name}")

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


def _check_layout(infos: Sequence[zipfile.ZipInfo], targets: Sequence[Path], dest: Path, archive: Path,
                  reserved: Sequence[Path]) -> None:
    """Refuse, before anything is written, members that cannot all be written as they are named.

    A file member that names ``dest`` itself (``.``), two members with the same path, a file where another member
    needs a folder (``a`` and ``a/b``) or where a folder already is, a folder where a file already is, and
    members under a ``reserved`` folder (a downloader's own state) are refused.
    """
    files: dict[Path, str] = {}
    dirs: dict[Path, str] = {}
    for info, target in zip(infos, targets):
        name = info.filename
        if any(target == r or r in target.parents for r in reserved):
            raise UnsafeArchiveError(f"{archive}: member {name!r} would be written into {target.parent}, which holds "
                                     "the download's own state; refusing to extract")
        if info.is_dir():
            if target in files:
                raise UnsafeArchiveError(f"{archive}: member {name!r} is a folder of the same path as the file "
                                         f"member {files[target]!r}; refusing to extract")
            dirs.setdefault(target, name)
            continue
        if target == dest:
            raise UnsafeArchiveError(f"{archive}: member {name!r} names the destination folder {dest} itself, not a "
                                     "file in it; refusing to extract")
        if target in files:
            raise UnsafeArchiveError(f"{archive}: members {files[target]!r} and {name!r} have the same path; refusing "
                                     "to extract (one would overwrite the other)")
        if target in dirs:
            raise UnsafeArchiveError(f"{archive}: member {name!r} is a file of the same path as the folder member "
                                     f"{dirs[target]!r}; refusing to extract")
        files[target] = name
    for target, name in files.items():
        if target.is_dir():
            raise UnsafeArchiveError(f"{archive}: member {name!r} is a file but {target} is a folder; refusing to "
                                     "extract (move that folder away or extract elsewhere)")
        for parent in target.parents:
            if parent == dest:
                break
            if parent in files:
                raise UnsafeArchiveError(f"{archive}: member {name!r} needs a folder {files[parent]!r}, which is also "
                                         "a file member; refusing to extract")
            if parent.exists() and not parent.is_dir():
                raise UnsafeArchiveError(f"{archive}: member {name!r} needs a folder {parent}, which is a file here; "
                                         "refusing to extract (move that file away or extract elsewhere)")
    for target, name in dirs.items():
        if target.exists() and not target.is_dir():
            raise UnsafeArchiveError(f"{archive}: member {name!r} is a folder but {target} is a file here; refusing "
                                     "to extract (move that file away or extract elsewhere)")


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
                 max_bytes: int | None = None, reserved: Sequence[str | Path] = ()) -> list[Path]:
    """Extract a zip archive into ``dest`` after checking that no member escapes it and that it is no zip bomb.

    Every member is checked before anything is written: absolute paths, drive letters, ``..`` components,
    symbolic links and paths resolving outside ``dest`` (e.g. through an existing symlink) are refused, and so are a
    file member named ``.``, duplicate paths, a file where another member (or the destination) has a folder or the
    reverse, members under a ``reserved`` folder, and an archive whose members declare more than ``max_bytes``
    uncompressed bytes in total (default :func:`extract_bound` of the archive's size). While writing, a member that
    yields more bytes than it declared is refused too. Files are written atomically; their CRC is checked by :mod:`zipfile` while reading.

    Args:
        archive: the zip file.
        dest: destination folder (created).
        progress: show a tqdm bar over the uncompressed bytes.
        max_bytes: bound on the total uncompressed size (default ``extract_bound(archive size)``).
        reserved: folders under ``dest`` no member may be written into (e.g. the downloader's state folder).

    Returns:
        The extracted file paths.

    Raises:
        UnsafeArchiveError: a member would escape ``dest`` or cannot be written as named (see above), or the
            archive expands past ``max_bytes`` (nothing extracted in any case).
        DiskSpaceError: ``dest`` has less free space than the members still to extract (nothing extracted).
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
        _check_layout(infos, targets, dest, archive,
                      [Path(r).expanduser().resolve() for r in reserved])
        total = sum(i.file_size for i in infos)
        if total > bound:
            raise UnsafeArchiveError(
                f"{archive}: its members expand to {total} bytes, more than the bound of {bound} bytes "
                f"({MAX_EXPANSION_RATIO}x the archive size, at least {MIN_EXTRACT_BOUND} bytes); refusing to extract "
                "a possible zip bomb. If the archive is genuine, extract it with safe_extract(..., max_bytes=N)"
            )
        # members already extracted with their size (an interrupted earlier run) need no new space; each file is
        # written to a temporary name first, so the largest one is needed once more
        missing = [i.file_size for i, t in zip(infos, targets)
                   if not i.is_dir() and not (t.is_file() and t.stat().st_size == i.file_size)]
        check_free_space(dest, sum(missing) + max(missing, default=0), what=f"extracting {archive.name}")
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
