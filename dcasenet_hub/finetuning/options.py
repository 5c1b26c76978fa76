"""Options of :func:`dcasenet_hub.finetune`: one :class:`FinetuneOptions` dataclass (as transformers'
``TrainingArguments``), and the task names fine-tuning accepts.

Tasks are the package's one vocabulary (:data:`dcasenet_hub.config.TASKS`: ``"scene"``, ``"tags"``, ``"events"``);
fine-tuning's own words ``"classification"``, ``"tagging"`` and ``"detection"`` are accepted everywhere as aliases
(:func:`dcasenet_hub.config.canonical_task`) and are the words written in model cards and saved records, so
checkpoints fine-tuned before and after the change read alike.

Example:
    >>> from dcasenet_hub.finetuning import FinetuneOptions
    >>> opts = FinetuneOptions(freeze="conv_block3", epochs=15, mixup=0.1)
    >>> opts.probe, opts.resolved_epochs(), opts.resolved_lr()
    (False, 15, 0.001)
    >>> finetune_task("classification"), TASK_WORDS["scene"]
    ('scene', 'classification')
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub._options import DeclaredOptions, document, option
from dcasenet_hub._options import merge_options as _merge
from dcasenet_hub.config import TIME_REDUCTION, FrontendConfig, canonical_task
from dcasenet_hub.devices import resolve_dtype
from dcasenet_hub.errors import OptionsError
from dcasenet_hub.inference.options import options_error

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Canonical task -> fine-tuning's word for it (written in model cards, ``extra.finetune.task`` and summaries).
TASK_WORDS = {"scene": "classification", "tags": "tagging", "events": "detection"}
#: Ways to start the new head.
HEADS = ("new", "reuse")
#: Batch-norm handling of the trained blocks when fine-tuning.
BATCH_NORMS = ("train", "frozen")
#: Defaults that depend on the mode: (linear probe, fine-tuning).
DEFAULT_EPOCHS = (100, 15)
DEFAULT_LR = (3e-3, 1e-3)
#: One step of the trunk in seconds (0.8 s with the authors' front-end): the shortest fine-tuning crop.
STEP_S = TIME_REDUCTION / FrontendConfig().frame_rate


def finetune_task(task: str) -> str:
    """The canonical head name (``"scene"``, ``"tags"``, ``"events"``) of a fine-tuning task in either spelling.

    Raises:
        ValueError: not a task with a head (the message lists both spellings).

    Example:
        >>> finetune_task("tagging"), finetune_task("events")
        ('tags', 'events')
    """
    try:
        return canonical_task(task, heads_only=True)
    except ValueError:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASK_WORDS.values())} (or "
                         f"{', '.join(TASK_WORDS)})") from None


@document
@dataclass(frozen=True)
class FinetuneOptions(DeclaredOptions):
    """Everything :func:`~dcasenet_hub.finetune` can be told besides the model, the data and the task; each option
    declared here once with its default, what it allows and one line of doc (:meth:`describe`; listed at the end of
    this docstring), checked when built.

    Raises:
        OptionsError: an invalid value or combination (a ``ValueError``; the message names the option and the fix).

    Example:
        >>> FinetuneOptions(epochs=0)
        Traceback (most recent call last):
        ...
        dcasenet_hub.errors.OptionsError: epochs=0: must be a whole number >= 1, or None
    """

    head: str = option("new", "a new head, or reuse the base model's rows for labels it already knows",
                       f"one of {', '.join(map(repr, HEADS))}")
    freeze: str = option("all", "all = linear probe; a block name (freeze_choices()) = freeze it and the blocks "
                         "before it; none = fine-tune everything", "all, none or a block name")
    epochs: int | None = option(None, "maximum epochs (None: 100 for a probe, 15 for fine-tuning)",
                                "a whole number >= 1, or None")
    batch_size: int = option(32, "clips (probe: windows or steps) per step", "a whole number >= 1")
    lr: float | None = option(None, "head learning rate, Adam, cosine-annealed to 1 % (None: 3e-3 for a probe, "
                              "1e-3 for fine-tuning)", "a number > 0, or None")
    body_lr_scale: float = option(0.1, "unfrozen pretrained blocks learn at lr * body_lr_scale", "a number >= 0")
    weight_decay: float = option(0.0, "Adam weight decay", "a number >= 0")
    crop_s: float | None = option(None, "fine-tuning crop in seconds (None: 5, detection 30; cut to the shortest "
                                  "clip, a multiple of 0.8)", "a number of seconds >= 0.8 (one DcaseNet step), or None")
    mixup: float | None = option(None, "mixup alpha for fine-tuning (the authors': 0.1; None: off)",
                                 "a number > 0, or None")
    warm_start: bool = option(False, "fine-tuning only: a linear probe first, then fine-tuning from it (LP-FT)",
                              "True or False")
    batch_norm: str = option("train", "fine-tuning only: train (batch statistics, re-estimated after each epoch) "
                             "or frozen (the base model's statistics; scale and shift still learn)",
                             f"one of {', '.join(map(repr, BATCH_NORMS))}")
    patience: int | None = option(10, "stop after this many epochs without a better validation score (or an equal "
                                  "one with a lower validation loss; None: never)",
                                  "a whole number >= 1, or None")
    labels: Sequence[str] | None = option(None, "label names in output order (None: those found, sorted)",
                                          "None or label names")
    validation_fraction: float = option(0.2, "share of clips drawn (stratified) for validation when the data names "
                                        "no split", "a number between 0 and 1 (exclusive)")
    seed: int = option(0, "seed of the split, the head's initialisation, crops, mixup and shuffling",
                       "a whole number")
    delimiter: str | None = option(None, "column separator of a table (None: guessed)", "None or a character")
    label_delimiter: str = option(",", "separator of several labels in one cell (tagging)", "a string")
    audio_dir: str | Path | None = option(None, "folder the table's paths are relative to (None: the table's "
                                          "folder)", "None or a folder")
    output_dir: str | Path | None = option(None, "write the model folder (config, weights, model card, "
                                           "metrics.jsonl) here", "None or a folder (not an existing file)")
    overwrite: bool = option(False, "replace a model already in output_dir", "True or False")
    resume: bool = option(False, "continue the run stopped in output_dir from its last finished epoch (exactly as "
                          "if it had not stopped; the same model, data and options)", "True or False")
    device: str | torch.device | None = option(None, "None = where the model is, auto = CUDA if available, or a "
                                               "device name", "None, auto, cpu, cuda, cuda:N, mps")
    dtype: str | None = option(None, "precision of the forward passes (fp16: GPUs, with loss scaling); weights, "
                               "optimiser and the saved model stay float32", "None, fp32, bf16 or fp16")
    progress: bool | None = option(None, "progress bars (None: when stderr is a terminal)", "True, False or None")

    def __post_init__(self) -> None:
        def fail(name: str) -> OptionsError:
            return options_error(name, getattr(self, name), f"must be {self.allowed(name)}")

        for name, choices in (("head", HEADS), ("batch_norm", BATCH_NORMS)):
            if getattr(self, name) not in choices:
                raise fail(name)
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if value is None and name != "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value < 1:
                raise fail(name)
        for name, positive in (("lr", True), ("crop_s", True), ("mixup", True), ("body_lr_scale", False),
                               ("weight_decay", False)):
            value = getattr(self, name)
            if value is None and name in ("lr", "crop_s", "mixup"):
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (
                    value > 0 if positive else value >= 0):
                raise fail(name)
        if self.crop_s is not None and self.crop_s < STEP_S - 1e-9:  # shorter than what the trunk sees at once
            raise fail("crop_s")
        fraction = self.validation_fraction
        if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0 < fraction < 1:
            raise fail("validation_fraction")
        if self.output_dir is not None and Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise fail("output_dir")  # refused before training, not when the model is saved
        if self.resume and self.output_dir is None:
            raise OptionsError("resume continues a run from the state it keeps in its output folder: pass "
                               "output_dir (--output-dir) as well")
        if self.mixup is not None and self.probe:
            raise OptionsError("mixup mixes training crops, so it needs fine-tuning: pass freeze='none' or a block "
                               "name (see freeze_choices(model, task)), or drop mixup for a linear probe")
        resolve_dtype(self.dtype)  # a known precision name (the message lists them)

    @property
    def probe(self) -> bool:
        """True for a linear probe (``freeze="all"``)."""
        return self.freeze == "all"

    def resolved_epochs(self) -> int:
        """``epochs``, or the mode's default (100 for a probe, 15 for fine-tuning)."""
        return int(self.epochs if self.epochs is not None else DEFAULT_EPOCHS[not self.probe])

    def resolved_lr(self) -> float:
        """``lr``, or the mode's default (3e-3 for a probe, 1e-3 for fine-tuning)."""
        return float(self.lr if self.lr is not None else DEFAULT_LR[not self.probe])

    def data_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~dcasenet_hub.finetuning.data.read_dataset` among these options."""
        return {"labels": self.labels, "delimiter": self.delimiter, "label_delimiter": self.label_delimiter,
                "audio_dir": self.audio_dir, "validation_fraction": self.validation_fraction, "seed": self.seed}


def merge_options(options: FinetuneOptions | None, overrides: Mapping[str, Any]) -> FinetuneOptions:
    """``options`` (default: all defaults) with ``overrides`` (option names as keywords) applied.

    Raises:
        TypeError: ``options`` is not a :class:`FinetuneOptions`, or an override is not an option name (the
            message lists the known ones).
        ValueError: an invalid value (from :class:`FinetuneOptions`).

    Example:
        >>> merge_options(None, {"epochs": 3}).epochs
        3
    """
    return _merge(FinetuneOptions, options, overrides, caller="finetune")


__all__ = ["BATCH_NORMS", "HEADS", "TASK_WORDS", "FinetuneOptions", "finetune_task", "merge_options"]
