"""Folders of audio in, a folder of result files out: what ``dcasenet-hub embed`` and ``predict`` run, for Python.

* :func:`run` does it all around :func:`~dcasenet_hub.inference.iterate` and returns a :class:`Report`
  (:func:`prepare` checks everything and writes nothing, :meth:`Plan.execute` works); options: :class:`BatchOptions`.
* :func:`discover` expands files, folders and list files into :class:`Item` s; :func:`shard` / :func:`in_shard`,
  :func:`torchrun_shard` / :func:`gather` split and merge work between machines or torchrun processes.
* :func:`outputs_for`, :func:`is_complete` and :func:`settings_meta` tell which inputs a rerun can skip.
* Any number of processes may write one folder: each records into a :class:`~dcasenet_hub.batch.journal.Journal`,
  :func:`rebuild` makes ``index.csv`` and the merged event files from all records (:func:`read_index`,
  :func:`write_merged`).

This module is the one place to import the pieces from; the layer uses :mod:`dcasenet_hub.inference` the way the
command line does.

Example:
    >>> from dcasenet_hub import batch
    >>> items = batch.discover(["corpus/"])                          # doctest: +SKIP
    >>> [i.rel.as_posix() for i in batch.shard(items, 1, 8)][:2]      # doctest: +SKIP
    ['street/a.wav', 'park/b.flac']
    >>> report = batch.run(model, ["corpus/"], "emb/", task="embed")  # doctest: +SKIP
    >>> report.done, report.skipped, len(report.failed)               # doctest: +SKIP
    (120, 0, 1)
    >>> opts = batch.BatchOptions(task="predict", median_filter=0.5, workers=4)
    >>> report = batch.run(model, ["corpus/"], "pred/", opts, shard="1/2")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub._io import OUT_OF_MEMORY_FIX, disk_full, out_of_memory
from dcasenet_hub._process import exit_with_parent
from dcasenet_hub.batch.discovery import (
    AUDIO_EXTENSIONS,
    LIST_EXTENSIONS,
    Item,
    discover,
    in_shard,
    parse_shard,
    read_list,
    shard,
)
from dcasenet_hub.batch.distributed import gather, torchrun_shard
from dcasenet_hub.batch.index import (
    INDEX_COLUMNS,
    one_line,
    read_index,
    write_all_events,
    write_durations,
    write_merged,
)
from dcasenet_hub.batch.journal import (
    Journal,
    display,
    input_key,
    output_lock,
    rebuild,
)
from dcasenet_hub.batch.options import (
    TASKS,
    BatchOptions,
    merge_batch_options,
)
from dcasenet_hub.batch.tables import (
    PARQUET_DIR,
    EmbeddingTable,
    read_embeddings,
    write_parquet,
)
from dcasenet_hub.batch.resume import (
    check_unchanged,
    holder,
    is_complete,
    loaded_identity,
    model_identity,
    other_owner,
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
    "BatchOptions",
    "EmbeddingTable",
    "Item",
    "Journal",
    "Plan",
    "Report",
    "discover",
    "display",
    "gather",
    "in_shard",
    "input_key",
    "is_complete",
    "loaded_identity",
    "model_identity",
    "one_line",
    "other_owner",
    "outputs_for",
    "parse_shard",
    "prepare",
    "read_embeddings",
    "read_index",
    "read_list",
    "rebuild",
    "run",
    "settings_meta",
    "sha256",
    "shard",
    "source_identity",
    "torchrun_shard",
    "write_all_events",
    "write_durations",
    "write_merged",
    "write_outputs",
    "write_parquet",
]

# ----------------------------------------------------------------------------------------------------------------
# The whole folder job
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What :func:`run` did.

    Attributes:
        task: ``"embed"`` or ``"predict"``.
        items: This run's inputs (of its shard), with their final status.
        index_path: The output folder's ``index.csv`` (every writer's inputs).
        processes: Number of torchrun processes that shared the job (``None``: not under torchrun).
        merged: On torchrun's rank 0, the number of inputs in the merged ``index.csv``.
        problems: What went wrong with the folder itself (its journal or index could not be written, e.g. a full
            disk), one line each naming the path; the inputs' own failures are in :attr:`failed`.
    """

    task: str
    items: list[Item]
    index_path: Path
    processes: int | None = None
    merged: int | None = None
    problems: list[str] = field(default_factory=list)

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

    def __repr__(self) -> str:
        """One line: the counts and the index; never the items (``report.items``, ``report.failed``).

        Example:
            >>> report                                  # doctest: +SKIP
            Report(embed, 250 inputs: 248 done, 0 skipped, 2 failed; index emb/index.csv)
        """
        problems = f", {len(self.problems)} folder problems" if self.problems else ""
        return (f"Report({self.task}, {len(self.items)} inputs: {self.done} done, {self.skipped} skipped, "
                f"{len(self.failed)} failed{problems}; index {self.index_path})")


def _select(items: list[Item], out_dir: Path, task: str, shard_: tuple[int, int] | None,
            event_formats: tuple[str, ...] = ("dcase",)) -> list[Item]:
    """This shard's items with their outputs; a second input writing the same output fails (names the first)."""
    by_output: dict[Path, list[Item]] = {}
    selected: list[Item] = []
    for item in items:
        if not in_shard(item.rel, shard_):
            continue
        if not item.status:  # not failed before processing (a broken symlink argument)
            item.outputs = outputs_for(out_dir, item.rel, task, event_formats)
            item.output = str(item.outputs["main"])
            by_output.setdefault(item.outputs["main"], []).append(item)
        selected.append(item)
    for main, group in by_output.items():
        if len(group) < 2:
            continue
        # the input whose result the output already holds keeps it (an earlier run's); else the first found
        held = holder(main)
        keep = next((i for i in group if input_key(i.path) == held), group[0])
        for item in group:
            if item is not keep:
                item.status = "failed"
                item.error = (f"output {item.output} would overwrite that of {keep.path}; "
                              "rename one of the files or process them separately")
    return selected


def _make_folder(out_dir: Path) -> list[Path]:
    """Create the output folder (and missing parents); the folders created, outermost first.

    Raises:
        OSError: it cannot be created, or it exists and cannot be written (the message names it, why, and the fix).
    """
    import errno
    import os

    missing = [d for d in (out_dir, *out_dir.parents) if not d.exists()][::-1]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the output folder {display(str(out_dir))} ({_write_error(exc)}); choose "
                      "another output folder (-o)") from None
    # a read-only folder (or file system) of finished outputs: said once here, not as a failure of every write
    if not os.access(out_dir, os.W_OK | os.X_OK):
        why = os.strerror(errno.EROFS if _read_only(out_dir) else errno.EACCES)
        raise OSError(f"cannot write into the output folder {display(str(out_dir))} ({why}); choose another output "
                      "folder (-o), or make it writable") from None
    return missing


def _read_only(folder: Path) -> bool:
    import os

    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs here
        return False


#: What a full disk (or quota) means for a run; added to the one-line errors it causes.
_NO_SPACE_FIX = "free space on that disk (or choose another -o), then run the command again: finished inputs are kept"


def _input_error(exc: BaseException) -> str:
    text = one_line(exc)
    if out_of_memory(exc):
        text = f"{text}; {OUT_OF_MEMORY_FIX}"
    return display(text)


def _write_error(exc: BaseException) -> str:
    text = one_line(exc)
    if disk_full(exc):
        text = f"{text}; {_NO_SPACE_FIX}"
    return display(text)


def _taken(item: Item, owner: str) -> str:
    return display(f"output {item.output} holds the result of {owner} (another input with the same output name, "
                   "of an earlier run or of another writer); rename one of the files or use another -o")


@dataclass
class Plan:
    """A checked folder job (from :func:`prepare`): this shard's inputs and the options; :meth:`execute` runs it.

    Attributes:
        model: The model, or its name / path (loaded by :meth:`execute` only if some input needs computing).
        items: This shard's inputs, with their output files.
        output_dir: The output folder.
        index_path: ``OUTDIR/index.csv``.
        meta: The settings recorded in every output (:func:`settings_meta`, with the weights' content hash), less
            the input's identity.
        launched: ``(rank + 1, world size)`` under torchrun.
        options: The job's :class:`BatchOptions` (keyword overrides applied); ``task``, ``level``, ``overwrite``
            and ``device`` read from it.
    """

    model: Any
    items: list[Item]
    output_dir: Path
    index_path: Path
    meta: dict[str, Any]
    launched: tuple[int, int] | None
    options: BatchOptions

    @property
    def task(self) -> str:
        """``"embed"`` or ``"predict"``."""
        return self.options.task

    @property
    def level(self) -> str:
        """Which embeddings are saved."""
        return self.options.level

    @property
    def overwrite(self) -> bool:
        """Whether complete outputs are recomputed."""
        return self.options.overwrite

    @property
    def device(self) -> Any:
        """The device asked for (before torchrun and the backend have their say)."""
        return self.options.device

    def _record(self, item: Item) -> dict[str, Any]:
        """The journal record of an item's state (an input already complete is ``ok``: its outputs are)."""
        status = "ok" if item.status == "skipped" else item.status or "pending"
        main = item.outputs.get("main")
        output = main.relative_to(self.output_dir).as_posix() if main is not None and status == "ok" else ""
        return {"key": input_key(item.path), "input": str(item.path), "status": status, "output": output,
                "duration_s": item.duration_s, "error": item.error, "warning": item.warning}

    def execute(self, *, load: Callable[[str], Any] | None = None) -> Report:
        """Skip complete inputs, compute the others, write their files, record each in the folder's journal and
        rebuild the index (:mod:`~dcasenet_hub.batch.journal`); see :func:`run`.

        Args:
            load: How to load a named model (default: :func:`~dcasenet_hub.from_pretrained`).
        """
        from dcasenet_hub._io import clean_stale_temp_files
        from dcasenet_hub.batch.distributed import local_device
        from dcasenet_hub.inference.pipeline import iterate
        from dcasenet_hub.inference.settings import select_labels

        model, out_dir, launched, task = self.model, self.output_dir, self.launched, self.task
        report = Report(task, self.items, self.index_path, processes=launched[1] if launched else None)
        journal = Journal(out_dir)

        def note(items: list[Item]) -> None:
            try:
                journal.append(self._record(i) for i in items)
            except OSError as exc:
                if not report.problems or report.problems[-1] != _write_error(exc):
                    report.problems.append(_write_error(exc))

        # tables an earlier run built are rebuilt too: they hold the indexed .npz values, whatever this run's format
        # or task (a predict run over an embed folder leaves them empty, as its index holds no .npz)
        tables = ((task == "embed" and self.options.embedding_format == "parquet")
                  or (out_dir / PARQUET_DIR).is_dir())
        parquet = tables and launched is None and self.options.shard is None

        def index(*, done: bool) -> list[dict[str, str]] | None:
            try:
                return rebuild(out_dir, events=task == "predict", done=journal if done else None,
                               event_formats=self.options.event_formats, parquet=parquet and done)
            except (OSError, ValueError, ImportError) as exc:  # filelock.Timeout is an OSError; no pyarrow
                report.problems.append(f"cannot update {display(str(self.index_path))}: {_write_error(exc)}")
                return None

        todo: list[Item] = []
        metas: dict[int, dict[str, Any]] = {}
        for item in report.items:
            if item.status:
                continue
            meta = {**self.meta, **source_identity(item.path)}
            metas[id(item)] = meta
            if not self.overwrite and is_complete(item, meta):
                item.status = "skipped"
                continue
            owner = other_owner(item)
            if owner is not None:  # as for two inputs of one run: the second fails instead of overwriting
                item.status, item.error = "failed", _taken(item, owner)
                continue
            todo.append(item)
        created = _make_folder(out_dir)  # first: a folder that cannot be made stops the job before the model loads
        if todo:  # a model that cannot be loaded, or label options it does not have, stop the job before it writes
            try:
                if isinstance(model, (str, Path)):
                    if load is None:
                        from dcasenet_hub.inference.model import from_pretrained as load
                    model = load(str(model))
                    # fingerprinted when planned, loaded only now (a resumed job with nothing to compute loads
                    # nothing): weights replaced in between are refused
                    check_unchanged(self.model, self.meta.get("model_sha256"))
                cfg = model.config
                select_labels((cfg.scene_labels, cfg.tag_labels, cfg.event_labels), self.options.inference)
            except BaseException:
                for folder in reversed(created):  # what this job made, while still empty (another writer's stays)
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                raise
        try:
            out_dir.mkdir(parents=True, exist_ok=True)  # again: a writer that could not start may have removed it
            for p in clean_stale_temp_files(out_dir):  # left by a killed run; those of live runs are kept
                logger.info("removed a stale temporary file of a killed run: %s", display(str(p)))
        except OSError as exc:
            report.problems.append(f"cannot write the output folder {display(str(out_dir))}: {_write_error(exc)}")
        note(report.items)
        index(done=False)
        try:
            if todo:
                inference = self.options.inference
                device = inference.device
                if device is None and isinstance(self.model, (str, Path)):
                    device = "auto"  # a model this job loads has no place of its own yet
                if inference.backend == "onnxruntime":
                    device = "cpu"
                elif launched is not None:
                    device = local_device(device)
                results = iterate(model, [str(i.path) for i in todo], embeddings=task == "embed",
                                  predictions=task == "predict", options=inference.replace(device=device))
                try:
                    for r in results:
                        item = todo[r.index]
                        item.duration_s = r.duration_s
                        item.warning = display(one_line(r.warning)) if r.warning else ""
                        if r.error is not None:
                            item.status, item.error = "failed", _input_error(r.error)
                        else:
                            try:
                                # another writer may have taken the name since planning
                                with output_lock(out_dir):
                                    owner = other_owner(item)
                                    if owner is None:
                                        write_outputs(item, r, task, metas[id(item)], level=self.level)
                                        item.status = "ok"
                                    else:
                                        item.status, item.error = "failed", _taken(item, owner)
                            except OSError as exc:  # e.g. disk full: this input is retried by the next run
                                item.status, item.error = ("failed",
                                                           f"writing outputs failed: {_write_error(exc)}")
                        note([item])
                finally:
                    results.close()
        finally:  # also when interrupted (Ctrl-C) or failing: index.csv then holds what finished
            index(done=True)
        if tables and launched is None and not parquet:
            logger.warning("parquet: a shard does not build %s/%s/ (other shards may still be writing); after the "
                           "last shard, run the command again without --shard: every input is skipped and the "
                           "Parquet files are built", out_dir, PARQUET_DIR)
        if launched is not None:
            report.merged = gather(out_dir, task, launched, self.options.event_formats, parquet=tables)
        return report


def prepare(
    model: Any,
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    options: BatchOptions | None = None,
    **overrides: Any,
) -> Plan:
    """Check every option and find this shard's inputs, writing nothing: the first half of :func:`run`.

    Arguments are :func:`run`'s (``options`` and the same keyword overrides). Errors in them (and missing inputs) are
    raised here, so a caller (the command line) can report them before any file is touched; :meth:`Plan.execute`
    then does the work.

    Raises:
        TypeError: ``options`` is not a :class:`BatchOptions`, or an unknown option name (the message lists them).
        FileNotFoundError: an input does not exist, or no audio file was found.
        NotADirectoryError: ``output_dir`` is an existing file.
        ValueError: an invalid option, or ``shard`` given under torchrun.

    Example:
        >>> plan = prepare("dcasenet-v3", ["corpus/"], "emb/", shard=(1, 4))   # doctest: +SKIP
        >>> len(plan.items), plan.index_path.name                             # doctest: +SKIP
        (250, 'index.csv')
        >>> report = plan.execute()                                            # doctest: +SKIP
    """
    opts = merge_batch_options(options, overrides, caller="prepare")  # every option is checked here
    shard_ = opts.shard
    launched = torchrun_shard()
    if launched is not None:
        exit_with_parent()  # a torchrun killed outright would leave this process waiting at the final barrier
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
    identity = model_identity(model) if named else loaded_identity(model)
    return Plan(
        model=model, items=_select(items, out_dir, opts.task, shard_, opts.event_formats), output_dir=out_dir,
        index_path=out_dir / "index.csv", meta=settings_meta(opts.task, identity, opts.inference, level=opts.level),
        launched=launched, options=opts,
    )


def run(
    model: Any,
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    options: BatchOptions | None = None,
    *,
    load: Callable[[str], Any] | None = None,
    **overrides: Any,
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
        options: A :class:`BatchOptions` (default: all defaults; ``task`` is ``"embed"`` or ``"predict"``); see its
            fields.
        load: How to load a named ``model`` (default: :func:`~dcasenet_hub.from_pretrained`).
        **overrides: Any :class:`BatchOptions` field by name (``task="predict"``, ``shard=(2, 8)``, ...), applied
            over ``options``.

    Returns:
        A :class:`Report` (failed inputs are in ``report.failed``, not raised).

    It is :func:`prepare` (every check, nothing written) then :meth:`Plan.execute`.

    Raises:
        TypeError: ``options`` is not a :class:`BatchOptions`, or an unknown option name (the message lists them).
        FileNotFoundError: an input does not exist, or no audio file was found.
        NotADirectoryError: ``output_dir`` is an existing file.
        ValueError: an invalid option (task, shard, hop, layer, dtype ...), or ``shard`` given under torchrun.

    Example:
        >>> report = run("dcasenet-v3", ["recordings/"], "pred/", task="predict", median_filter=0.5)  # doctest: +SKIP
        >>> report.done, report.skipped, [i.error for i in report.failed]                            # doctest: +SKIP
        (41, 0, [])
        >>> opts = BatchOptions(task="predict", median_filter=0.5, batch_size=16)
        >>> report = run("dcasenet-v3", ["recordings/"], "pred/", opts, device="cuda")              # doctest: +SKIP
    """
    opts = merge_batch_options(options, overrides, caller="run")
    return prepare(model, inputs, output_dir, opts).execute(load=load)
