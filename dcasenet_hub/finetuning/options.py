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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub._options import merge_options as _merge
from dcasenet_hub._options import option_names
from dcasenet_hub.config import canonical_task
from dcasenet_hub.devices import resolve_dtype

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


@dataclass(frozen=True)
class FinetuneOptions:
    """Everything :func:`~dcasenet_hub.finetune` can be told besides the model, the data and the task.

    Attributes:
        head: ``"new"`` head, or ``"reuse"`` the base model's rows for labels it already knows.
        freeze: ``"all"`` = linear probe; a block name (:func:`~dcasenet_hub.finetuning.freeze_choices`) = freeze
            it and the blocks before it; ``"none"`` = fine-tune everything.
        epochs: Maximum epochs (default 100 for a probe, 15 for fine-tuning).
        batch_size: Clips (probe: windows or steps) per step.
        lr: Head learning rate, Adam, cosine-annealed to 1 % (default 3e-3 probe, 1e-3 fine-tuning).
        body_lr_scale: Unfrozen pretrained blocks learn at ``lr * body_lr_scale``.
        weight_decay: Adam weight decay.
        crop_s: Fine-tuning crop in seconds (default 5, detection 30; cut to the shortest clip, a multiple of 0.8).
        mixup: Mixup ``alpha`` for fine-tuning (the authors': 0.1); ``None`` = off.
        warm_start: Fine-tuning only: a linear probe first, then fine-tuning from it (LP-FT).
        batch_norm: Fine-tuning only: ``"train"`` (batch statistics, re-estimated after each epoch) or ``"frozen"``
            (the base model's statistics; scale and shift still learn).
        patience: Stop after this many epochs without a better validation score (``None``: never).
        labels: Label names in output order (default: those found, sorted).
        validation_fraction: Share of clips drawn (stratified) for validation when the data names no split.
        seed: Seed of the split, the head's initialisation, crops, mixup and shuffling.
        delimiter: Column separator of a table (default: guessed).
        label_delimiter: Separator of several labels in one cell (tagging).
        audio_dir: Folder the table's paths are relative to (default: the table's folder).
        output_dir: Write the model folder (config, weights, model card, ``metrics.jsonl``) here.
        overwrite: Replace a model already in ``output_dir``.
        device: ``None`` = where the model is, ``"auto"`` = CUDA if available, or a device name.
        dtype: Precision of the forward passes: ``None``/``"fp32"``, ``"bf16"`` or ``"fp16"`` (GPUs; loss
            scaling); weights, optimiser and the saved model stay float32.
        progress: Show progress bars (``None``: when stderr is a terminal).

    Raises:
        ValueError: an invalid value or combination (the message names the fix).

    Example:
        >>> FinetuneOptions(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a positive integer, got 0
    """

    head: str = "new"
    freeze: str = "all"
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    body_lr_scale: float = 0.1
    weight_decay: float = 0.0
    crop_s: float | None = None
    mixup: float | None = None
    warm_start: bool = False
    batch_norm: str = "train"
    patience: int | None = 10
    labels: Sequence[str] | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    delimiter: str | None = None
    label_delimiter: str = ","
    audio_dir: str | Path | None = None
    output_dir: str | Path | None = None
    overwrite: bool = False
    device: str | torch.device | None = None
    dtype: str | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}; choose one of {', '.join(HEADS)}")
        if self.batch_norm not in BATCH_NORMS:
            raise ValueError(f"batch_norm={self.batch_norm!r}; choose one of {', '.join(BATCH_NORMS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.body_lr_scale >= 0 or not self.weight_decay >= 0:
            raise ValueError(f"body_lr_scale ({self.body_lr_scale}) and weight_decay ({self.weight_decay}) must be "
                             ">= 0")
        if self.mixup is not None and not self.mixup > 0:
            raise ValueError(f"mixup alpha must be positive (the authors used 0.1), got {self.mixup}")
        if self.mixup is not None and self.probe:
            raise ValueError("mixup mixes training crops, so it needs fine-tuning: pass freeze='none' or a block "
                             "name (see freeze_choices(model, task)), or drop mixup for a linear probe")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.crop_s is not None and not self.crop_s > 0:
            raise ValueError(f"crop_s must be a positive number of seconds, got {self.crop_s}")
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

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return option_names(cls)


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
