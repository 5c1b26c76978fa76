"""Processes, devices, precision and the training state of the trainer (:mod:`dcasenet_hub.train.loop`).

* Several processes (``torchrun``): one per device, rank 0 evaluates and writes checkpoints; batch-norm running
  statistics are averaged over the processes at the end of every epoch.
* Device: ``"auto"``/``None`` is :func:`dcasenet_hub.devices.resolve_device`'s ``"auto"`` (CUDA when available);
  under torchrun a bare ``"cuda"`` becomes the process's local rank.
* The training state (``last.pt``) holds the model, optimiser, schedule, scaler and every random generator, so a
  resumed run takes the same steps as an uninterrupted one.

Example:
    >>> from dcasenet_hub.train.distributed import autocast_args
    >>> autocast_args("fp32", __import__("torch").device("cpu"))
    {'device_type': 'cpu', 'enabled': False}
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dcasenet_hub import _env
from dcasenet_hub._process import exit_with_parent
from dcasenet_hub.devices import resolve_device

STATE_FORMAT = "dcasenet-hub-train-state/1"
#: Training precisions, spelt as embed/predict/finetune spell them (fp16 trains with gradient scaling, CUDA only).
DTYPES = ("fp32", "bf16", "fp16")


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: str | None) -> Ranks:
    import torch.distributed as dist

    process = _env.torchrun()
    if process is None:
        return Ranks()
    exit_with_parent()  # a torchrun killed outright would leave this process waiting at a barrier for hours
    if dist.is_initialized():
        return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=process.local_rank)
    use_cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Ranks(rank=process.rank, world=process.world, local_rank=process.local_rank, owns_group=True)


def training_device(device: str | None, dist: Ranks) -> torch.device:
    """The training device: ``None``/``"auto"`` = CUDA when available; a bare ``"cuda"`` = the local rank's GPU."""
    dev = resolve_device("auto" if device is None else device)  # raises ValueError naming the fix
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", dist.local_rank if dist.world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def average_batchnorm_statistics(model: nn.Module, world: int) -> None:
    """Average every batch-norm's running mean and variance over the processes (at the end of each epoch).

    DDP keeps parameters identical but leaves each process's running statistics updated by its own half-batches,
    so the evaluated and saved model would describe rank 0's data only and the ranks would disagree. Averaging them
    (as timm's ``distribute_bn(reduce=True)``) makes every rank hold the same full model before evaluation and
    checkpointing.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(buf)
                buf.div_(world)


def training_dtype(dtype: str | torch.dtype | None) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for any accepted spelling (``"amp"``, the trainer's former name, is fp16).

    Raises:
        ValueError: another dtype (the message lists the accepted ones).
    """
    from dcasenet_hub.devices import short_dtype_name

    if dtype == "amp":
        return "fp16"
    try:
        return short_dtype_name(dtype)
    except ValueError:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


def autocast_args(dtype: str | torch.dtype | None, device: torch.device) -> dict[str, Any]:
    """``torch.autocast`` keyword arguments of ``dtype`` (:func:`training_dtype`) on ``device``.

    Raises:
        ValueError: unknown dtype, or fp16 off CUDA.
    """
    name = training_dtype(dtype)
    if name == "fp16" and device.type != "cuda":
        raise ValueError("dtype fp16 (float16 autocast with gradient scaling) needs a CUDA device; use fp32 or bf16 "
                         "on CPU")
    if name == "fp32":
        return {"device_type": device.type, "enabled": False}
    return {"device_type": device.type, "dtype": torch.float16 if name == "fp16" else torch.bfloat16,
            "enabled": True}


def deprecated_precision(dtype: str, precision: str | None, caller: str) -> str:
    """``dtype``, or the deprecated ``precision`` keyword when given (with a ``DeprecationWarning``)."""
    if precision is None:
        return dtype
    import warnings

    warnings.warn(f"{caller}(precision=...) is deprecated; use dtype= (fp32, bf16 or fp16; 'amp' is fp16)",
                  DeprecationWarning, stacklevel=3)
    return precision


def rng_state(device: torch.device) -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    st["numpy"] = (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    name, keys, *rest = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def save_state(path: Path, state: dict[str, Any]) -> None:
    from dcasenet_hub._io import atomic_torch_save

    atomic_torch_save(path, state)


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ValueError(f"Cannot read training state {path} ({exc}); it is damaged - remove it to restart the "
                         "stage from scratch") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a dcasenet-hub training state")
    return state

