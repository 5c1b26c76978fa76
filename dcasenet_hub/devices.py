"""Where and in what precision to compute: one :func:`resolve_device` and one :func:`resolve_dtype` for every caller.

The one default, everywhere (inference, fine-tuning, training, the CLI): ``device=None`` means *where the model
is* (CPU for a model just built or loaded), and ``"auto"`` means *CUDA if this torch has it, else CPU*. The CLI's
``--device`` defaults to ``auto``. ``dtype=None`` means float32, the exact path.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_dtype("bf16")
    torch.bfloat16
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

#: Accepted spellings of the three compute dtypes.
DTYPE_NAMES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
}
#: Short names (as the CLI's ``--dtype`` and the metadata of outputs write them).
SHORT_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def resolve_device(device: str | torch.device | None = None, *, model: Any = None) -> torch.device:
    """The device to compute on, checked to be usable by this torch.

    Args:
        device: ``None`` (where ``model`` is; CPU without a model), ``"auto"`` (CUDA if available, else CPU), or
            anything ``torch.device`` takes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
        model: A module whose parameters say where it is.

    Raises:
        ValueError: not a device, or one this machine does not have (the message names the fix).
    """
    import torch

    if device is None:
        if model is not None:
            try:
                return next(model.parameters()).device
            except StopIteration:
                pass
        return torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device}: no CUDA device is available to this torch ({torch.__version__}); "
                             "use cpu (or auto), or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device}: MPS is not available on this machine; use cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = None, *, device: str | torch.device | None = None) -> torch.dtype:
    """The compute dtype: ``torch.float32`` (default, exact), ``torch.bfloat16`` or ``torch.float16``.

    Args:
        dtype: ``None``, a name (``"fp32"``, ``"float32"``, ``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``,
            ``"half"``, optionally prefixed ``"torch."``) or a ``torch.dtype``.
        device: Where it will run; float16 on CPU logs a warning (approximate and usually slower than fp32).

    Raises:
        ValueError: another dtype (the message lists the accepted ones).
    """
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in DTYPE_NAMES:
            raise ValueError(f"Unknown dtype {dtype!r}; use one of: fp32, bf16, fp16")
        dtype = getattr(torch, DTYPE_NAMES[key])
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"Unsupported dtype {dtype}; use torch.float32, torch.bfloat16 or torch.float16")
    if dtype == torch.float16 and device is not None and torch.device(device).type == "cpu":
        logger.warning("float16 autocast on CPU is approximate and usually slower than fp32; on CPU prefer "
                       "dtype='bf16' (fast on CPUs with AVX512-BF16/AMX) or fp32, the exact default")
    return dtype


def short_dtype_name(dtype: str | torch.dtype | None) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for any accepted spelling (as outputs' metadata records it)."""
    return SHORT_DTYPE_NAMES[str(resolve_dtype(dtype)).removeprefix("torch.")]


#: CPU flags that decide which precisions run natively (``/proc/cpuinfo`` spelling).
CPU_SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """The CPU's model name, logical core count and which of :data:`CPU_SPEED_FLAGS` it has.

    Read from ``/proc/cpuinfo`` where there is one (Linux); elsewhere the flags are unknown (``None``), so callers
    can tell "lacks bf16" from "cannot tell".

    Example:
        >>> sorted(cpu_info())
        ['cores', 'flags', 'model']
    """
    import os
    import platform
    from pathlib import Path

    model = platform.processor() or platform.machine()
    flags: list[str] | None = None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            present = set(value.split())
            flags = [f for f in CPU_SPEED_FLAGS if f in present]
    return {"model": model, "cores": os.cpu_count() or 1, "flags": flags}


def native_cpu_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere bf16 is emulated and slow."""
    flags = cpu_info()["flags"] or []
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_int8_dot_products() -> bool | None:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8), without which int8
    runs slower than fp32 here; None when the flags cannot be read."""
    flags = cpu_info()["flags"]
    return None if flags is None else bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))

