"""Options of the folder jobs (:func:`~dcasenet_hub.batch.run` / ``prepare``): one :class:`BatchOptions`, checked
when it is built, before any file is touched. It holds the job's own options and one
:class:`~dcasenet_hub.inference.InferenceOptions`, whose fields it also takes (and shows) by name.

Example:
    >>> from dcasenet_hub.batch.options import BatchOptions, merge_batch_options
    >>> opts = BatchOptions(task="predict", median_filter=0.5, shard="2/8")
    >>> opts.shard, opts.inference.median_filter, opts.median_filter
    ((2, 8), 0.5, 0.5)
    >>> merge_batch_options(opts, {"shard": None, "workers": 0}).workers
    0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dcasenet_hub._options import DeclaredOptions, document, merge_options, option, option_names
from dcasenet_hub.batch.discovery import parse_shard
from dcasenet_hub.batch.tables import EMBEDDING_FORMATS
from dcasenet_hub.inference.options import InferenceOptions, options_error
from dcasenet_hub.inference.outputs import EVENT_FORMATS

#: What a folder job computes: one ``.npz`` per input, or ``.json`` + ``.events.csv`` + ``.scores.tsv``.
TASKS = ("embed", "predict")
#: Which embeddings an embed job saves.
LEVELS = ("frame", "clip", "both")


@document
@dataclass(frozen=True, init=False)
class BatchOptions(DeclaredOptions):
    """Everything a folder job (:func:`~dcasenet_hub.batch.run`) can be told besides the model, the inputs and the
    output folder. Invalid values raise :class:`~dcasenet_hub.errors.OptionsError` (a ``ValueError``) here, so a job
    never starts writing with them. The fields of its :class:`~dcasenet_hub.inference.InferenceOptions` (hop, layer,
    pooling, threshold, ..., dtype, backend, device, batch_size, workers, progress) are also keywords of the
    constructor (over ``inference``) and attributes.

    Example:
        >>> BatchOptions(threshold=1.5)
        Traceback (most recent call last):
        ...
        dcasenet_hub.errors.OptionsError: threshold=1.5: must be a probability between 0 and 1, or None
    """

    task: str = option("embed", "what the job computes: one .npz per input, or .json + .events.csv + .scores.tsv",
                       f"one of {', '.join(map(repr, TASKS))}")
    level: str = option("both", "which embeddings an embed job saves", f"one of {', '.join(map(repr, LEVELS))}")
    shard: tuple[int, int] | None = option(
        None, "only the inputs of shard I of N; stored as (I, N)", "None, (I, N) or 'I/N' with 1 <= I <= N")
    overwrite: bool = option(False, "recompute inputs whose outputs are complete", "True or False")
    event_formats: tuple[str, ...] = option(
        ("dcase",), "event files predict writes per input and merged: dcase (.events.csv, events.csv), raven "
        "(.Table.1.selections.txt, events.selections.txt), audacity (.labels.txt, per input only: a label track "
        "belongs to one audio file)", f"one or more of {', '.join(map(repr, EVENT_FORMATS))} (a string may list "
        "them with commas)")
    embedding_format: str = option(
        "npz", "npz (one .npz per input) or parquet: also the folder's clip and frame embeddings as sharded Parquet "
        "files in OUTDIR/parquet/, rebuilt from the .npz files at the end of each unsharded run (needs pyarrow)",
        f"one of {', '.join(map(repr, EMBEDDING_FORMATS))}")
    inference: InferenceOptions = field(default_factory=InferenceOptions, metadata={
        "doc": "how inputs are computed (InferenceOptions)", "allowed": "an InferenceOptions", "records": ()})

    def __init__(self, task: str = "embed", level: str = "both", shard: tuple[int, int] | str | None = None,
                 overwrite: bool = False, event_formats: tuple[str, ...] | str = ("dcase",),
                 embedding_format: str = "npz", inference: InferenceOptions | None = None,
                 **inference_options: Any) -> None:
        for name, value, allowed in (("task", task, TASKS), ("level", level, LEVELS),
                                     ("embedding_format", embedding_format, EMBEDDING_FORMATS)):
            if value not in allowed:
                raise options_error(name, value, f"must be {self.allowed(name)}")
        if embedding_format == "parquet":
            try:
                import pyarrow  # noqa: F401  (checked before any work; used at the end of the run)
            except ImportError:
                raise options_error("embedding_format", embedding_format, 'needs pyarrow, which is not installed: '
                                    'pip install "dcasenet-hub[parquet]"') from None
        formats = event_formats.split(",") if isinstance(event_formats, str) else event_formats
        formats = tuple(dict.fromkeys(str(f).strip() for f in formats))
        for f in formats or ("",):
            if f not in EVENT_FORMATS:
                raise options_error("event_formats", event_formats, f"must be {self.allowed('event_formats')}")
        inf = InferenceOptions.merge(inference, inference_options, caller="BatchOptions")
        inf.check_outputs(embeddings=task == "embed", predictions=task == "predict")
        if shard is not None:
            # one form, (I, N), so options built from "2/8" and (2, 8) are equal and the index suffix is the same
            shard = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
        for name, value in (("task", task), ("level", level), ("shard", shard), ("overwrite", bool(overwrite)),
                            ("event_formats", formats), ("embedding_format", embedding_format), ("inference", inf)):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # the inference options read as the job's own (opts.median_filter), as they are given
        if name != "inference" and name in _INFERENCE_NAMES:
            return getattr(self.inference, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every option name a :class:`BatchOptions` takes: its own fields and the inference options."""
        return option_names(cls) + _INFERENCE_NAMES


_INFERENCE_NAMES = option_names(InferenceOptions)


def merge_batch_options(options: BatchOptions | None, overrides: Mapping[str, Any], *,
                        caller: str = "prepare") -> BatchOptions:
    """``options`` (default: all defaults) with ``overrides`` (option names as keywords) applied over it.

    Raises:
        TypeError: ``options`` is not a :class:`BatchOptions`, or an override is not an option name (the message
            lists the known ones).
        OptionsError: an invalid value.

    Example:
        >>> merge_batch_options(BatchOptions(task="predict"), {"threshold": 0.4}).threshold
        0.4
    """
    return merge_options(BatchOptions, options, overrides, caller=caller)


__all__ = ["LEVELS", "TASKS", "BatchOptions", "merge_batch_options"]
