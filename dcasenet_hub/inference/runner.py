"""The model copy that runs inference: optimised torch (:mod:`dcasenet_hub.models.fast`) or onnxruntime, cached."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from dcasenet_hub.devices import resolve_device, resolve_dtype
from dcasenet_hub.export.runtime import OnnxRuntimeDcaseNet, onnxruntime_model
from dcasenet_hub.inference.options import BACKENDS
from dcasenet_hub.models.dcasenet import DcaseNetModule
from dcasenet_hub.models.fast import OptimizedDcaseNet, optimize_for_inference

_RUNNERS: weakref.WeakKeyDictionary[nn.Module, tuple[Any, DcaseNetModule]] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Changes when any parameter or buffer is replaced, moved or modified in place (optimizer steps included)."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*model.parameters(), *model.buffers()))


def inference_runner(
    model: DcaseNetModule,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    backend: str = "torch",
) -> DcaseNetModule:
    """The fastest exact way to run ``model`` forward now: an :class:`OptimizedDcaseNet`, cached per model.

    The inference pipeline calls it once per :func:`~dcasenet_hub.inference.iterate`. The copy
    is rebuilt when the model's weights or batch-norm statistics change (fine-tuning between calls is safe), and
    it holds a second copy of the weights (about 55 MB for v3) for as long as the model lives. A model that is
    already optimised is returned as it is when ``dtype`` does not ask for another precision.

    Args:
        model: The model to run.
        dtype: ``None`` (exact fp32, the default), or ``"bf16"`` / ``"fp16"`` (autocast, approximate).
        device: Device to run on (default: the model's).
        backend: ``"torch"`` or ``"onnxruntime"`` (CPU, fp32; needs the ``onnx`` extra).

    Example:
        >>> from dcasenet_hub import build_model
        >>> model = build_model("v3", seed=0).eval()
        >>> inference_runner(model) is inference_runner(model)
        True
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    target = resolve_device(device, model=model)
    if isinstance(model, OnnxRuntimeDcaseNet):
        return model
    if isinstance(model, OptimizedDcaseNet) and (dtype is None or resolve_dtype(dtype, device=target) ==
                                                 model.fast_options.dtype):
        return model if next(model.parameters()).device == target else optimize_for_inference(model, device=target)
    key = (resolve_dtype(dtype, device=target), target, backend)
    fingerprint = _fingerprint(model)
    cached = _RUNNERS.get(model)
    if cached is not None and cached[0] == (key, fingerprint):
        return cached[1]
    if backend == "onnxruntime":
        if key[0] != torch.float32 or target.type != "cpu":
            raise ValueError("The onnxruntime backend runs fp32 on CPU; use backend='torch' for other dtypes/devices")
        fast = onnxruntime_model(model)
    else:
        fast = optimize_for_inference(model, dtype=key[0], device=target)
    _RUNNERS[model] = ((key, fingerprint), fast)
    return fast
