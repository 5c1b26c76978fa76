"""Options of the folder jobs (:func:`~dcasenet_hub.batch.run` / ``prepare``): one :class:`BatchOptions`
dataclass (as transformers' ``TrainingArguments``), checked when it is built, before any file is touched.

Example:
    >>> from dcasenet_hub.batch.options import BatchOptions, merge_batch_options
    >>> opts = BatchOptions(task="predict", median_filter=0.5, shard="2/8")
    >>> opts.shard, opts.iterate_kwargs()["median_filter"]
    ((2, 8), 0.5)
    >>> merge_batch_options(opts, {"shard": None, "workers": 0}).workers
    0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dcasenet_hub._options import merge_options as _merge
from dcasenet_hub._options import option_names
from dcasenet_hub.batch.discovery import parse_shard
from dcasenet_hub.batch.resume import settings_meta
from dcasenet_hub.batch.tables import EMBEDDING_FORMATS
from dcasenet_hub.devices import short_dtype_name
from dcasenet_hub.inference.outputs import EVENT_FORMATS
from dcasenet_hub.inference.runner import BACKENDS
from dcasenet_hub.inference.settings import (
    LAYERS,
    POOLINGS,
    _check_choice,
    _check_event_options,
    _hop_frames,
)

#: What a folder job computes: one ``.npz`` per input, or ``.json`` + ``.events.csv`` + ``.scores.tsv``.
TASKS = ("embed", "predict")
#: Which embeddings an embed job saves.
LEVELS = ("frame", "clip", "both")


@dataclass(frozen=True)
class BatchOptions:
    """Everything a folder job (:func:`~dcasenet_hub.batch.run`) can be told besides the model, the inputs
    and the output folder. Invalid values raise ``ValueError`` here, so a job never starts writing with them.

    Attributes:
        task: ``"embed"`` (one ``.npz`` per input) or ``"predict"`` (``.json``, ``.events.csv``, ``.scores.tsv``).
        level: Which embeddings to save: ``"frame"``, ``"clip"`` or ``"both"`` (embed only).
        hop: Seconds between frame embeddings / event scores (``None``: the network's 0.8 s step); see
            :func:`~dcasenet_hub.inference.allowed_hops`.
        layer: ``"gru"`` (default), ``"conv"`` or ``"scene"`` (:data:`~dcasenet_hub.inference.LAYERS`).
        pooling: ``"mean"``, ``"max"`` or ``"mean+max"``: clip embedding from the frames.
        threshold: Event threshold, a probability in [0, 1] (``None``: the model's).
        median_filter: Median filter over the binary event activity, in seconds >= 0 (``None``: none).
        min_duration: Drop events shorter than this many seconds >= 0 (``None``: keep all).
        pad_tail: Pad the last 0.8 s step so frames and events reach the end of each file.
        device: Where to compute (:func:`~dcasenet_hub.devices.resolve_device`); under torchrun ``"auto"`` /
            ``"cuda"`` mean this process's GPU; the onnxruntime backend runs on the CPU.
        dtype: Compute dtype (``None`` / ``"fp32"`` default, ``"bf16"``, ``"fp16"``, or a ``torch.dtype``), recorded
            for resume.
        backend: ``"torch"`` or ``"onnxruntime"``.
        batch_size: 5 s windows per forward pass (>= 1).
        workers: Threads decoding audio ahead of the network (>= 0).
        shard: ``(I, N)`` or ``"I/N"`` with ``1 <= I <= N``: only the inputs of that shard; stored as ``(I, N)``.
        overwrite: Recompute inputs whose outputs are complete.
        progress: Show a progress bar.
        event_formats: Event files ``predict`` writes per input and merged (one or more of
            :data:`~dcasenet_hub.inference.outputs.EVENT_FORMATS`; a string may list them with commas):
            ``"dcase"`` (``.events.csv``, ``events.csv``), ``"raven"`` (``.Table.1.selections.txt``,
            ``events.selections.txt``), ``"audacity"`` (``.labels.txt``; per input only: a label track belongs to one
            audio file).
        embedding_format: ``"npz"`` (one ``.npz`` per input) or ``"parquet"``: also the folder's clip and frame
            embeddings as sharded Parquet files in ``OUTDIR/parquet/``, rebuilt from the ``.npz`` files at the end of
            each unsharded run (:func:`~dcasenet_hub.batch.tables.write_parquet`; needs pyarrow).

    Raises:
        ValueError: an invalid value (the message names the option and the allowed values).

    Example:
        >>> BatchOptions(threshold=1.5)
        Traceback (most recent call last):
        ...
        ValueError: threshold must be a probability between 0 and 1, got 1.5
    """

    task: str = "embed"
    level: str = "both"
    hop: float | None = None
    layer: str = "gru"
    pooling: str = "mean"
    threshold: float | None = None
    median_filter: float | None = None
    min_duration: float | None = None
    pad_tail: bool = False
    device: Any = None
    dtype: Any = None
    backend: str = "torch"
    batch_size: int = 8
    workers: int = 2
    shard: tuple[int, int] | str | None = None
    overwrite: bool = False
    progress: bool = False
    event_formats: tuple[str, ...] | str = ("dcase",)
    embedding_format: str = "npz"

    def __post_init__(self) -> None:
        _check_choice("embedding_format", self.embedding_format, EMBEDDING_FORMATS)
        if self.embedding_format == "parquet":
            try:
                import pyarrow  # noqa: F401  (checked before any work; used at the end of the run)
            except ImportError:
                raise ValueError('embedding_format="parquet" needs pyarrow, which is not installed: '
                                 'pip install "dcasenet-hub[parquet]"') from None
        formats = self.event_formats.split(",") if isinstance(self.event_formats, str) else self.event_formats
        formats = tuple(dict.fromkeys(str(f).strip() for f in formats))
        if not formats:
            raise ValueError(f"event_formats must name at least one of {', '.join(EVENT_FORMATS)}")
        for f in formats:
            _check_choice("event_formats", f, EVENT_FORMATS)
        object.__setattr__(self, "event_formats", formats)
        _check_choice("task", self.task, TASKS)
        _check_choice("level", self.level, LEVELS)
        _check_choice("layer", self.layer, LAYERS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("backend", self.backend, BACKENDS)
        _hop_frames(self.hop, None)
        short_dtype_name(self.dtype)
        _check_event_options(self.threshold, self.median_filter, self.min_duration)
        if int(self.batch_size) < 1 or int(self.workers) < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {self.batch_size} and {self.workers}")
        if self.shard is not None:
            # one form, (I, N), so options built from "2/8" and (2, 8) are equal and the index suffix is the same
            text = self.shard if isinstance(self.shard, str) else f"{self.shard[0]}/{self.shard[1]}"
            object.__setattr__(self, "shard", parse_shard(text))

    @property
    def dtype_name(self) -> str:
        """The short dtype name recorded in outputs: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return short_dtype_name(self.dtype)

    def iterate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :meth:`Plan.execute <dcasenet_hub.batch.Plan.execute>` passes on to
        :func:`~dcasenet_hub.inference.iterate` (all but ``device``, which depends on torchrun and the backend).

        Example:
            >>> BatchOptions(dtype="float32").iterate_kwargs()["dtype"] is None    # fp32 is the exact default path
            True
        """
        name = self.dtype_name
        return {"dtype": None if name == "fp32" else name, "backend": self.backend, "hop": self.hop,
                "layer": self.layer, "pooling": self.pooling, "threshold": self.threshold,
                "median_filter": self.median_filter, "min_duration": self.min_duration, "pad_tail": self.pad_tail,
                "batch_size": self.batch_size, "workers": self.workers, "progress": self.progress}

    def settings_meta(self, identity: dict[str, Any]) -> dict[str, Any]:
        """What every output of the job records for resuming (:func:`~dcasenet_hub.batch.resume.settings_meta`).

        Args:
            identity: :func:`~dcasenet_hub.batch.resume.model_identity` of the weights.
        """
        return settings_meta(self.task, identity, level=self.level, hop=self.hop, layer=self.layer,
                             pooling=self.pooling, threshold=self.threshold, median_filter=self.median_filter,
                             min_duration=self.min_duration, pad_tail=self.pad_tail, dtype=self.dtype_name,
                             backend=self.backend)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return option_names(cls)


def merge_batch_options(options: BatchOptions | None, overrides: Mapping[str, Any], *,
                        caller: str = "prepare") -> BatchOptions:
    """``options`` (default: all defaults) with ``overrides`` (option names as keywords) applied over it.

    Args:
        options: A :class:`BatchOptions`, or ``None``.
        overrides: Option names and values; they win over ``options``.
        caller: The function named in a ``TypeError``.

    Raises:
        TypeError: ``options`` is not a :class:`BatchOptions`, or an override is not an option name (the message
            lists the known ones).
        ValueError: an invalid value (from :class:`BatchOptions`).

    Example:
        >>> merge_batch_options(BatchOptions(task="predict"), {"threshold": 0.4}).threshold
        0.4
    """
    return _merge(BatchOptions, options, overrides, caller=caller)


__all__ = ["LEVELS", "TASKS", "BatchOptions", "merge_batch_options"]
