"""How :func:`~dcasenet_hub.train.train` runs a recipe, declared once: :class:`TrainOptions`.

The recipe (:class:`~dcasenet_hub.train.Recipe`) says *what* is trained (architecture, tasks, epochs, learning
rate, batch sizes); these options say *how this run* goes (device, precision, workers, seed, resuming, progress).
``train`` takes ``options=`` plus the same names as keywords, which win over it, as ``embed`` and ``finetune`` do.

Example:
    >>> opts = TrainOptions(dtype="bf16", seed=3)
    >>> opts.replace(workers=2).workers, opts.dtype
    (2, 'bf16')
    >>> TrainOptions(dtype="int8")
    Traceback (most recent call last):
    ...
    dcasenet_hub.errors.OptionsError: dtype='int8': must be one of 'fp32', 'bf16', 'fp16' ('amp' is fp16)
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dcasenet_hub._options import DeclaredOptions, document, option
from dcasenet_hub.inference.options import options_error
from dcasenet_hub.train.distributed import DTYPES, training_dtype


@document
@dataclass(frozen=True)
class TrainOptions(DeclaredOptions):
    """How one :func:`~dcasenet_hub.train.train` run goes; each field declared here once with its default, what it
    allows and one line of doc (:meth:`describe`), checked when built.

    Raises:
        OptionsError: a value the option does not allow (a ``ValueError`` naming option, value and what is
            allowed).
    """

    device: str | None = option(
        None, "where to train (None or auto: CUDA when available; under torchrun a bare cuda is the local rank)",
        "None, auto, cpu, cuda, cuda:N")
    dtype: str = option("fp32", "compute precision (fp16: float16 autocast with gradient scaling, CUDA only)",
                         f"one of {', '.join(map(repr, DTYPES))} ('amp' is fp16)")
    workers: int = option(0, "DataLoader workers per task, and processes preparing the features",
                           "a whole number >= 0")
    seed: int = option(0, "seed of initialisation, data order, crops, mixup and dropout", "a whole number >= 0")
    resume: bool = option(False, "continue the run in the output folder from its last completed epoch (exactly)",
                           "True or False")
    stages: tuple[str, ...] | None = option(None, "run only these stages of the recipe (None: all)",
                                             "None or stage names such as 'joint', 'finetune-asc'")
    cache_dir: str | None = option(None, "feature cache (None: ~/.cache/dcasenet_hub/features)",
                                    "None or a folder")
    in_memory: bool = option(False, "keep the cached features in memory (small data)", "True or False")
    eval_batch_size: int = option(8, "examples per evaluation batch", "a whole number >= 1")
    progress: bool | None = option(None, "tqdm bars (None: when stderr is a terminal)", "True, False or None")

    def __post_init__(self) -> None:
        def fail(name: str) -> Exception:
            return options_error(name, getattr(self, name), f"must be {self.allowed(name)}")

        try:
            object.__setattr__(self, "dtype", training_dtype(self.dtype))
        except ValueError:
            raise fail("dtype") from None
        if self.device is not None and not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))  # a torch.device, recorded as text
        for name, low in (("workers", 0), ("seed", 0), ("eval_batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise fail(name)
            object.__setattr__(self, name, int(value))
        for name in ("resume", "in_memory"):
            if not isinstance(getattr(self, name), bool):
                raise fail(name)
        if self.progress not in (None, True, False):
            raise fail("progress")
        if self.stages is not None:
            stages = (self.stages,) if isinstance(self.stages, str) else self.stages
            if not isinstance(stages, Sequence) or not stages or not all(isinstance(s, str) and s for s in stages):
                raise fail("stages")
            object.__setattr__(self, "stages", tuple(stages))
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise fail("cache_dir")
            object.__setattr__(self, "cache_dir", str(Path(self.cache_dir).expanduser()))


__all__ = ["TrainOptions"]
