"""Which files a folder job reads: discovery of files / folders / list files, and shards.

Example:
    >>> from dcasenet_hub.batch.discovery import discover, shard
    >>> items = discover(["corpus/"])                                  # doctest: +SKIP
    >>> [i.rel.as_posix() for i in shard(items, 1, 8)][:2]              # doctest: +SKIP
    ['street/a.wav', 'park/b.flac']
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dcasenet_hub.audio.io import AUDIO_EXTENSIONS
from dcasenet_hub.inference.options import options_error

logger = logging.getLogger(__name__)

#: Extensions of text files that list inputs, one path per line.
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list", ".scp"})


@dataclass
class Item:
    """One input of a folder run and what became of it.

    Attributes:
        path: The audio file as an absolute, normalised path (``..`` and ``.`` removed, symlinks kept, so a
            git-annex link keeps its name and extension): the same from any working directory.
        rel: Its path relative to the folder it was found in (or to the common parent of loose files): the
            outputs mirror it under the output folder.
        status: ``""`` (not processed yet), ``"ok"``, ``"skipped"`` (outputs already complete) or ``"failed"``.
        output: The main output file (``.npz`` or ``.json``) once known.
        duration_s: Duration of the input when it could be read.
        error: Why it failed (one line).
        warning: A problem that did not stop it.
        outputs: Output files by role (``main``; ``events`` and ``scores`` for predictions).
    """

    path: Path
    rel: PurePosixPath
    status: str = ""
    output: str = ""
    duration_s: float | None = None
    error: str = ""
    warning: str = ""
    outputs: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Discovery and shards
# ----------------------------------------------------------------------------------------------------------------


def _real(path: Path) -> Path | None:
    """The file a path names after following symlinks, or ``None`` for a symlink loop or a broken symlink."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # ELOOP, ENOENT (RuntimeError: symlink loop on older Pythons)
        return None


def read_list(path: str | Path) -> list[Path]:
    """Paths listed in a text file, one per line (relative ones are relative to the list; ``#`` starts a comment).

    Raises:
        ValueError: the list cannot be read (the message names it and why).

    Example:
        >>> read_list("train.lst")         # doctest: +SKIP
        [PosixPath('audio/a.wav'), PosixPath('/data/b.flac')]
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read list file {path}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def discover(inputs: Iterable[str | Path]) -> list[Item]:
    """Expand audio files, folders and list files into :class:`Item` s, each with its output-relative path.

    Folders are searched recursively for :data:`AUDIO_EXTENSIONS` (hidden files and folders skipped); a folder's
    files keep their path relative to it, other files their path relative to their common parent folder. A file
    named more than once (directly, in a folder or a list) comes once. A symlink that loops or points nowhere, and a
    path that does not exist, come back as an item with ``status="failed"`` and the reason, without stopping the
    others.

    Args:
        inputs: Files, folders and list files (``.txt .lst .list .scp``).

    Returns:
        The items, folders' files in sorted order.

    Raises:
        FileNotFoundError: none of the inputs exists (a mistyped path; nothing to do).
        ValueError: a list file cannot be read.

    Example:
        >>> [(i.path.name, i.rel.as_posix()) for i in discover(["corpus/"])][:1]   # doctest: +SKIP
        [('a.wav', 'street/a.wav')]
    """
    rooted: list[tuple[Path, PurePosixPath]] = []
    loose: list[Path] = []
    broken: list[Item] = []
    missing: list[Path] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_symlink() and _real(p) is None:
            broken.append(Item(path=Path(os.path.abspath(p)), rel=PurePosixPath(p.name), status="failed",
                               error=f"{p} is a symlink loop or a broken symlink (points to {os.readlink(p)}); "
                                     "fix or remove the link"))
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and not f.is_dir()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            rooted += [(f, PurePosixPath(f.relative_to(p).as_posix())) for f in files]
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            listed = read_list(p)
            logger.info("%s: read as a list of %d audio paths, one per line (a %s input is a list file)", p,
                        len(listed), p.suffix.lower())
            loose += listed
        elif p.exists():
            loose.append(p)
        else:
            missing.append(p)
    if missing and not (rooted or loose or broken):  # a mistyped path, not one bad input among others
        raise FileNotFoundError(f"input not found: {', '.join(map(str, missing))}; check the path")
    broken += [Item(path=Path(os.path.abspath(p)), rel=PurePosixPath(p.name), status="failed",
                    error=f"{p}: input not found; check the path") for p in missing]
    if loose:
        root = Path(os.path.commonpath([str(f.resolve().parent) for f in loose]))
        rooted += [(f, PurePosixPath(f.resolve().relative_to(root).as_posix())) for f in loose]
    seen: set[Path] = set()
    items: list[Item] = []
    for f, rel in rooted:
        real = _real(f) or f.absolute()
        if real in seen:  # the same file again: once is enough
            continue
        seen.add(real)
        items.append(Item(path=Path(os.path.abspath(f)), rel=rel))
    return items + broken


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` as ``(I, N)`` (``None`` stays ``None``).

    Raises:
        OptionsError: not ``I/N`` with ``1 <= I <= N`` (a ``ValueError``).

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    if text is None:
        return None
    error = options_error("shard", text, "must look like I/N with 1 <= I <= N, e.g. 2/8")
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise error from None
    if not (n >= 1 and 1 <= i <= n):
        raise error
    return i, n


def in_shard(rel: PurePosixPath, shard: tuple[int, int] | None) -> bool:
    """Whether an input belongs to shard ``(I, N)``: a CRC-32 of its output path (relative, without extension).

    Hashing the output path, not the input path, puts inputs that would write the same output (``x.wav`` and
    ``x.flac``) in the same shard, where the collision is seen and reported. ``None`` is every input.

    Example:
        >>> sum(in_shard(PurePosixPath("a.wav"), (i, 4)) for i in range(1, 5))
        1
    """
    if shard is None:
        return True
    i, n = shard
    # os.fsencode: a name that is not UTF-8 (surrogate escapes) hashes by its bytes
    return zlib.crc32(os.fsencode(rel.with_suffix("").as_posix())) % n == i - 1


def shard(items: Iterable[Item], index: int, count: int) -> list[Item]:
    """The items of shard ``index`` of ``count`` (1-based), as :func:`in_shard` picks them; the shards partition.

    Example:
        >>> items = discover(["corpus/"])                                              # doctest: +SKIP
        >>> sum(len(shard(items, i, 3)) for i in (1, 2, 3)) == len(items)              # doctest: +SKIP
        True
    """
    parse_shard(f"{index}/{count}")  # the same range check as the command line's --shard
    return [item for item in items if in_shard(item.rel, (index, count))]
