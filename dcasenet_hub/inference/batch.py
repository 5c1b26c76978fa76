"""Folders of audio in, a folder of result files out: what ``dcasenet-hub embed`` and ``predict`` run, for Python.

* :func:`discover` expands files, folders (recursively, :data:`AUDIO_EXTENSIONS`) and list files into
  :class:`Item` s with the path their outputs take under the output folder.
* :func:`shard` / :func:`in_shard` split them between machines by a hash of the output path.
* :func:`outputs_for`, :func:`is_complete` and :func:`settings_meta` tell which inputs a rerun can skip: their
  outputs exist, come from one run, and were made with the same settings, weights and input file.
* :class:`IndexWriter` / :func:`read_index` keep ``index.csv``; :func:`write_all_events` the merged ``events.csv``.
* :func:`run` does all of it around :func:`~dcasenet_hub.inference.iterate` and returns a :class:`Report`;
  :mod:`dcasenet_hub.inference.distributed` adds the torchrun shard and merge.

Example:
    >>> from dcasenet_hub.inference import batch
    >>> items = batch.discover(["corpus/"])                          # doctest: +SKIP
    >>> [i.rel.as_posix() for i in batch.shard(items, 1, 8)][:2]      # doctest: +SKIP
    ['street/a.wav', 'park/b.flac']
    >>> report = batch.run(model, ["corpus/"], "emb/", task="embed")  # doctest: +SKIP
    >>> report.done, report.skipped, len(report.failed)               # doctest: +SKIP
    (120, 0, 1)
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dcasenet_hub.inference.distributed import gather, torchrun_shard
from dcasenet_hub.inference.index import (
    INDEX_COLUMNS,
    IndexWriter,
    one_line,
    read_index,
    write_all_events,
)
from dcasenet_hub.inference.resume import (
    is_complete,
    model_identity,
    outputs_for,
    settings_meta,
    sha256,
    source_identity,
    write_outputs,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_EXTENSIONS",
    "INDEX_COLUMNS",
    "LIST_EXTENSIONS",
    "TASKS",
    "IndexWriter",
    "Item",
    "Report",
    "discover",
    "gather",
    "in_shard",
    "is_complete",
    "model_identity",
    "one_line",
    "outputs_for",
    "parse_shard",
    "read_index",
    "read_list",
    "run",
    "settings_meta",
    "sha256",
    "shard",
    "source_identity",
    "torchrun_shard",
    "write_all_events",
    "write_outputs",
]

#: Extensions picked up when scanning folders: the formats libsndfile decodes (WAV/WAVEX, AIFF, AU, FLAC, OGG
#: Vorbis/Opus, MP3, CAF, W64, RF64, SD2, VOC, HTK, NIST Sphere), by their usual names. Other files can still be
#: passed one by one. (``.wv`` is WavPack, which libsndfile does not read, so it is not scanned.)
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    ".w64", ".rf64", ".sd2", ".voc", ".htk", ".nist", ".sph",
})
#: Extensions of text files that list inputs, one path per line.
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list", ".scp"})
#: What :func:`run` computes: one ``.npz`` per input, or ``.json`` + ``.events.csv`` + ``.scores.tsv``.
TASKS = ("embed", "predict")


@dataclass
class Item:
    """One input of a folder run and what became of it.

    Attributes:
        path: The audio file, as given or found.
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
    named more than once (directly, in a folder or a list) comes once. A symlink that loops or points nowhere comes
    back as an item with ``status="failed"`` and the reason, without stopping the others.

    Args:
        inputs: Files, folders and list files (``.txt .lst .list .scp``).

    Returns:
        The items, folders' files in sorted order.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a list file cannot be read.

    Example:
        >>> [(i.path.name, i.rel.as_posix()) for i in discover(["corpus/"])][:1]   # doctest: +SKIP
        [('a.wav', 'street/a.wav')]
    """
    rooted: list[tuple[Path, PurePosixPath]] = []
    loose: list[Path] = []
    broken: list[Item] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_symlink() and _real(p) is None:
            broken.append(Item(path=p, rel=PurePosixPath(p.name), status="failed",
                               error=f"{p} is a symlink loop or a broken symlink (points to {os.readlink(p)}); "
                                     "fix or remove the link"))
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and not f.is_dir()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            rooted += [(f, PurePosixPath(f.relative_to(p).as_posix())) for f in files]
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            loose += read_list(p)
        elif p.exists():
            loose.append(p)
        else:
            raise FileNotFoundError(f"input not found: {arg}")
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
        items.append(Item(path=f, rel=rel))
    return items + broken


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` as ``(I, N)`` (``None`` stays ``None``).

    Raises:
        ValueError: not ``I/N`` with ``1 <= I <= N``.

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise ValueError(f"shard I/N needs 1 <= I <= N, got {text!r}")
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
    return zlib.crc32(rel.with_suffix("").as_posix().encode("utf-8")) % n == i - 1


def shard(items: Iterable[Item], index: int, count: int) -> list[Item]:
    """The items of shard ``index`` of ``count`` (1-based), as :func:`in_shard` picks them; the shards partition.

    Example:
        >>> items = discover(["corpus/"])                                              # doctest: +SKIP
        >>> sum(len(shard(items, i, 3)) for i in (1, 2, 3)) == len(items)              # doctest: +SKIP
        True
    """
    parse_shard(f"{index}/{count}")  # the same range check as the command line's --shard
    return [item for item in items if in_shard(item.rel, (index, count))]


# ----------------------------------------------------------------------------------------------------------------
# The whole folder job
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What :func:`run` did.

    Attributes:
        task: ``"embed"`` or ``"predict"``.
        items: This run's inputs (of its shard), with their final status.
        index_path: The index file written (``index-I-of-N.csv`` for a shard).
        processes: Number of torchrun processes that shared the job (``None``: not under torchrun).
        merged: On torchrun's rank 0, the number of inputs in the merged ``index.csv``.
    """

    task: str
    items: list[Item]
    index_path: Path
    processes: int | None = None
    merged: int | None = None

    @property
    def done(self) -> int:
        """Inputs computed by this run."""
        return sum(i.status == "ok" for i in self.items)

    @property
    def skipped(self) -> int:
        """Inputs whose outputs were already complete."""
        return sum(i.status == "skipped" for i in self.items)

    @property
    def failed(self) -> list[Item]:
        """Inputs that failed (``error`` says why)."""
        return [i for i in self.items if i.status == "failed"]


def _select(items: list[Item], out_dir: Path, task: str, shard_: tuple[int, int] | None) -> list[Item]:
    """This shard's items with their outputs; a second input writing the same output fails (names the first)."""
    owner: dict[Path, Item] = {}
    selected: list[Item] = []
    for item in items:
        if not in_shard(item.rel, shard_):
            continue
        if not item.status:  # not failed before processing (a broken symlink argument)
            item.outputs = outputs_for(out_dir, item.rel, task)
            item.output = str(item.outputs["main"])
            first = owner.setdefault(item.outputs["main"], item)
            if first is not item:
                item.status = "failed"
                item.error = (f"output {item.output} would overwrite that of {first.path}; "
                              "rename one of the files or process them separately")
        selected.append(item)
    return selected


def run(
    model: Any,
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    task: str = "embed",
    level: str = "both",
    hop: float | None = None,
    layer: str = "gru",
    pooling: str = "mean",
    threshold: float | None = None,
    median_filter: float | None = None,
    min_duration: float | None = None,
    pad_tail: bool = False,
    device: Any = None,
    dtype: Any = None,
    backend: str = "torch",
    batch_size: int = 8,
    workers: int = 2,
    shard: tuple[int, int] | str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    load: Callable[[str], Any] | None = None,
) -> Report:
    """Embed or predict every audio file of ``inputs`` into ``output_dir``, resumably (``dcasenet-hub embed/predict``).

    Outputs mirror the input tree (docs/outputs.md): ``<path>.npz`` per input (embed) or ``<path>.json``,
    ``.events.csv`` and ``.scores.tsv`` (predict), plus ``index.csv`` (and ``events.csv``). Inputs whose outputs are
    complete and were made with the same settings, weights and input file are skipped unless ``overwrite``; files
    are written atomically and ``index.csv`` gains a durable row as each input finishes, so a killed run loses at
    most the inputs in flight. A bad input is a ``failed`` row, never an exception. Under torchrun each process
    takes the shard of its rank and rank 0 merges the index files at the end.

    Args:
        model: A manifest id or local checkpoint path (loaded with ``load`` only if some input needs computing, and
            fingerprinted by content for resume), or a loaded :class:`~dcasenet_hub.DcaseNet` (identified by its
            ``model_id``).
        inputs: Audio files, folders and list files (see :func:`discover`).
        output_dir: Output folder (created if missing).
        task: ``"embed"`` or ``"predict"``.
        level: Which embeddings to save: ``"frame"``, ``"clip"`` or ``"both"``.
        hop, layer, pooling, pad_tail, backend, batch_size, workers, progress: As for
            :func:`~dcasenet_hub.inference.embed`.
        threshold, median_filter, min_duration: As for :func:`~dcasenet_hub.inference.predict`.
        device: Where to compute (:func:`~dcasenet_hub.devices.resolve_device`); under torchrun ``"auto"`` /
            ``"cuda"`` mean this process's GPU; the onnxruntime backend runs on the CPU.
        dtype: Compute dtype (``"fp32"`` default, ``"bf16"``, ``"fp16"``), recorded for resume.
        shard: ``(I, N)`` or ``"I/N"``: only the inputs of that shard (:func:`in_shard`).
        overwrite: Recompute inputs whose outputs are complete.
        load: How to load a named ``model`` (default: :func:`~dcasenet_hub.from_pretrained`).

    Returns:
        A :class:`Report` (failed inputs are in ``report.failed``, not raised).

    Raises:
        FileNotFoundError: an input does not exist, or no audio file was found.
        NotADirectoryError: ``output_dir`` is an existing file.
        ValueError: an invalid option (task, shard, hop, layer, dtype ...), or ``shard`` given under torchrun.

    Example:
        >>> report = run("dcasenet-v3", ["recordings/"], "pred/", task="predict", median_filter=0.5)  # doctest: +SKIP
        >>> report.done, report.skipped, [i.error for i in report.failed]                            # doctest: +SKIP
        (41, 0, [])
    """
    from dcasenet_hub._io import clean_stale_temp_files
    from dcasenet_hub.devices import short_dtype_name
    from dcasenet_hub.inference.distributed import local_device
    from dcasenet_hub.inference.pipeline import iterate
    from dcasenet_hub.inference.settings import (
        LAYERS,
        POOLINGS,
        _check_choice,
        _hop_frames,
    )

    # every option is checked before anything is written
    _check_choice("task", task, TASKS)
    _check_choice("level", level, ("frame", "clip", "both"))
    _check_choice("layer", layer, LAYERS)
    _check_choice("pooling", pooling, POOLINGS)
    _hop_frames(hop, None)
    dtype_name = short_dtype_name(dtype)
    shard_ = parse_shard(shard) if isinstance(shard, str) else shard
    if shard_ is not None:
        parse_shard(f"{shard_[0]}/{shard_[1]}")
    launched = torchrun_shard()
    if launched is not None:
        if shard_ is not None:
            raise ValueError("shard and torchrun both split the inputs; drop the shard under torchrun (each "
                             "process takes the shard of its rank)")
        shard_ = launched
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is an existing file; the output folder must be a folder "
                                 "(it is created if missing)")
    items = discover(inputs)
    if not items:
        raise FileNotFoundError(f"no audio files found in {' '.join(str(i) for i in inputs)} "
                                f"(extensions: {' '.join(sorted(AUDIO_EXTENSIONS))})")
    named = isinstance(model, (str, Path))
    identity = model_identity(model) if named else {"model": getattr(model.config, "model_id", None)}
    meta_base = settings_meta(task, identity, level=level, hop=hop, layer=layer, pooling=pooling,
                              threshold=threshold, median_filter=median_filter, min_duration=min_duration,
                              pad_tail=pad_tail, dtype=dtype_name, backend=backend)

    for p in clean_stale_temp_files(out_dir):  # left by a killed run; those of live runs (other shards) are kept
        logger.info("removed a stale temporary file of a killed run: %s", p)
    suffix = f"-{shard_[0]}-of-{shard_[1]}" if shard_ else ""
    report = Report(task, _select(items, out_dir, task, shard_), out_dir / f"index{suffix}.csv",
                    processes=launched[1] if launched else None)
    todo: list[Item] = []
    metas: dict[int, dict[str, Any]] = {}
    for item in report.items:
        if item.status:
            continue
        meta = {**meta_base, **source_identity(item.path)}
        metas[id(item)] = meta
        if not overwrite and is_complete(item, meta):
            item.status = "skipped"
            continue
        todo.append(item)

    writer = IndexWriter(report.index_path, report.items)
    writer.start()
    if todo:
        if named:
            if load is None:
                from dcasenet_hub.inference.model import from_pretrained as load
            model = load(str(model))
        if backend == "onnxruntime":
            device = "cpu"
        elif launched is not None:
            device = local_device(device)
        results = iterate(
            model, [str(i.path) for i in todo], embeddings=task == "embed", predictions=task == "predict",
            dtype=None if dtype_name == "fp32" else dtype_name, backend=backend, threshold=threshold,
            median_filter=median_filter, min_duration=min_duration, device=device, batch_size=batch_size,
            progress=progress, workers=workers, hop=hop, layer=layer, pooling=pooling, pad_tail=pad_tail,
        )
        try:
            for r in results:
                item = todo[r.index]
                item.duration_s = r.duration_s
                item.warning = one_line(r.warning) if r.warning else ""
                if r.error is not None:
                    item.status, item.error = "failed", one_line(r.error)
                else:
                    try:
                        write_outputs(item, r, task, metas[id(item)], level=level)
                        item.status = "ok"
                    except (OSError, ValueError, RuntimeError) as exc:
                        item.status, item.error = "failed", f"writing outputs failed: {one_line(exc)}"
                writer.done(item)
        finally:
            results.close()
            writer.write()
    if task == "predict":
        write_all_events(out_dir / f"events{suffix}.csv", writer.rows())
    if launched is not None:
        report.merged = gather(out_dir, task, launched)
    return report
