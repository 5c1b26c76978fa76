"""Folders of audio in, a folder of result files out: what ``dcasenet-hub embed`` and ``predict`` run, for Python.

* :func:`discover` expands files, folders (recursively, :data:`AUDIO_EXTENSIONS`) and list files into
  :class:`Item` s with the path their outputs take under the output folder.
* :func:`shard` / :func:`in_shard` split them between machines by a hash of the output path.
* :func:`outputs_for`, :func:`is_complete` and :func:`settings_meta` tell which inputs a rerun can skip: their
  outputs exist, come from one run, and were made with the same settings, weights and input file.
* :class:`IndexWriter` / :func:`read_index` keep ``index.csv``; :func:`write_all_events` the merged ``events.csv``.
* :func:`run` does all of it around :func:`~dcasenet_hub.inference.iterate` and returns a :class:`Report`
  (:func:`prepare` checks everything and writes nothing; :meth:`Plan.execute` does the work);
  :func:`torchrun_shard` / :func:`gather` are the torchrun shard and merge.

The pieces live in :mod:`.discovery`, :mod:`.resume`, :mod:`.index` and :mod:`.distributed`; this module is the one
place to import them from.

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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcasenet_hub.inference.discovery import (
    AUDIO_EXTENSIONS,
    LIST_EXTENSIONS,
    Item,
    discover,
    in_shard,
    parse_shard,
    read_list,
    shard,
)
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
    "Plan",
    "Report",
    "discover",
    "gather",
    "in_shard",
    "is_complete",
    "model_identity",
    "one_line",
    "outputs_for",
    "parse_shard",
    "prepare",
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

#: What :func:`run` computes: one ``.npz`` per input, or ``.json`` + ``.events.csv`` + ``.scores.tsv``.
TASKS = ("embed", "predict")


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


@dataclass
class Plan:
    """A checked folder job (from :func:`prepare`): this shard's inputs and the settings; :meth:`execute` runs it.

    Attributes:
        model: The model, or its name / path (loaded by :meth:`execute` only if some input needs computing).
        items: This shard's inputs, with their output files.
        output_dir: The output folder.
        index_path: ``index.csv`` (``index-I-of-N.csv`` for a shard).
        suffix: ``""`` or ``"-I-of-N"`` (of the index and events files).
        meta: The settings recorded in every output (:func:`settings_meta`), less the input's identity.
        launched: ``(rank + 1, world size)`` under torchrun.
        task, level, overwrite, device: As given to :func:`run`.
        iterate_options: The options passed on to :func:`~dcasenet_hub.inference.iterate` (dtype, backend, hop ...).
    """

    model: Any
    items: list[Item]
    output_dir: Path
    index_path: Path
    suffix: str
    meta: dict[str, Any]
    launched: tuple[int, int] | None
    task: str
    level: str
    overwrite: bool
    device: Any
    iterate_options: dict[str, Any]

    def execute(self, *, load: Callable[[str], Any] | None = None) -> Report:
        """Skip complete inputs, compute the others, write their files and the index; see :func:`run`.

        Args:
            load: How to load a named model (default: :func:`~dcasenet_hub.from_pretrained`).
        """
        from dcasenet_hub._io import clean_stale_temp_files
        from dcasenet_hub.inference.distributed import local_device
        from dcasenet_hub.inference.pipeline import iterate

        model, out_dir, launched, task = self.model, self.output_dir, self.launched, self.task
        for p in clean_stale_temp_files(out_dir):  # left by a killed run; those of live runs (other shards) are kept
            logger.info("removed a stale temporary file of a killed run: %s", p)
        report = Report(task, self.items, self.index_path, processes=launched[1] if launched else None)
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
            todo.append(item)

        writer = IndexWriter(report.index_path, report.items)
        writer.start()
        if todo:
            if isinstance(model, (str, Path)):
                if load is None:
                    from dcasenet_hub.inference.model import from_pretrained as load
                model = load(str(model))
            device = self.device
            if self.iterate_options["backend"] == "onnxruntime":
                device = "cpu"
            elif launched is not None:
                device = local_device(device)
            results = iterate(model, [str(i.path) for i in todo], embeddings=task == "embed",
                              predictions=task == "predict", device=device, **self.iterate_options)
            try:
                for r in results:
                    item = todo[r.index]
                    item.duration_s = r.duration_s
                    item.warning = one_line(r.warning) if r.warning else ""
                    if r.error is not None:
                        item.status, item.error = "failed", one_line(r.error)
                    else:
                        try:
                            write_outputs(item, r, task, metas[id(item)], level=self.level)
                            item.status = "ok"
                        except (OSError, ValueError, RuntimeError) as exc:
                            item.status, item.error = "failed", f"writing outputs failed: {one_line(exc)}"
                    writer.done(item)
            finally:
                results.close()
                writer.write()
        if task == "predict":
            write_all_events(out_dir / f"events{self.suffix}.csv", writer.rows())
        if launched is not None:
            report.merged = gather(out_dir, task, launched)
        return report


def prepare(
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
) -> Plan:
    """Check every option and find this shard's inputs, writing nothing: the first half of :func:`run`.

    Arguments are :func:`run`'s. Errors in them (and missing inputs) are raised here, so a caller (the command line)
    can report them before any file is touched; :meth:`Plan.execute` then does the work.

    Raises:
        FileNotFoundError: an input does not exist, or no audio file was found.
        NotADirectoryError: ``output_dir`` is an existing file.
        ValueError: an invalid option, or ``shard`` given under torchrun.

    Example:
        >>> plan = prepare("dcasenet-v3", ["corpus/"], "emb/", shard=(1, 4))   # doctest: +SKIP
        >>> len(plan.items), plan.index_path.name                             # doctest: +SKIP
        (250, 'index-1-of-4.csv')
        >>> report = plan.execute()                                            # doctest: +SKIP
    """
    from dcasenet_hub.devices import short_dtype_name
    from dcasenet_hub.inference.runner import BACKENDS
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
    _check_choice("backend", backend, BACKENDS)
    _hop_frames(hop, None)
    dtype_name = short_dtype_name(dtype)
    if threshold is not None and not (math.isfinite(float(threshold)) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be a probability between 0 and 1, got {threshold}")
    for name, value in (("median_filter", median_filter), ("min_duration", min_duration)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0.0):
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value}")
    if int(batch_size) < 1 or int(workers) < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
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

    suffix = f"-{shard_[0]}-of-{shard_[1]}" if shard_ else ""
    return Plan(
        model=model, items=_select(items, out_dir, task, shard_), output_dir=out_dir,
        index_path=out_dir / f"index{suffix}.csv", suffix=suffix, meta=meta_base, launched=launched, task=task,
        level=level, overwrite=overwrite, device=device,
        iterate_options={"dtype": None if dtype_name == "fp32" else dtype_name, "backend": backend, "hop": hop,
                         "layer": layer, "pooling": pooling, "threshold": threshold, "median_filter": median_filter,
                         "min_duration": min_duration, "pad_tail": pad_tail, "batch_size": batch_size,
                         "workers": workers, "progress": progress},
    )


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

    It is :func:`prepare` (every check, nothing written) then :meth:`Plan.execute`.

    Raises:
        FileNotFoundError: an input does not exist, or no audio file was found.
        NotADirectoryError: ``output_dir`` is an existing file.
        ValueError: an invalid option (task, shard, hop, layer, dtype ...), or ``shard`` given under torchrun.

    Example:
        >>> report = run("dcasenet-v3", ["recordings/"], "pred/", task="predict", median_filter=0.5)  # doctest: +SKIP
        >>> report.done, report.skipped, [i.error for i in report.failed]                            # doctest: +SKIP
        (41, 0, [])
    """
    return prepare(
        model, inputs, output_dir, task=task, level=level, hop=hop, layer=layer, pooling=pooling, threshold=threshold,
        median_filter=median_filter, min_duration=min_duration, pad_tail=pad_tail, device=device, dtype=dtype,
        backend=backend, batch_size=batch_size, workers=workers, shard=shard, overwrite=overwrite, progress=progress,
    ).execute(load=load)
