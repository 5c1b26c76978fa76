"""The model copy that runs inference: optimised torch (:mod:`dcasenet_hub.models.fast`) or onnxruntime, cached."""

from __future__ import annotations

import logging
from typing import Any

import torch

from dcasenet_hub.devices import cpu_int8_dot_products, resolve_device, resolve_dtype
from dcasenet_hub.export.runtime import OnnxRuntime, onnxruntime_model
from dcasenet_hub.inference.options import BACKENDS, INT8, is_int8, options_error
from dcasenet_hub.models.dcasenet import DcaseNetModule
from dcasenet_hub.models.fast import FastRuntime, optimize_for_inference

logger = logging.getLogger(__name__)


def _tensors(model: DcaseNetModule) -> tuple[Any, ...]:
    """Which tensors the model holds, where and how: changes when one is replaced, moved, cast or (un)frozen."""
    return tuple((t.data_ptr(), t.dtype, t.device, t.requires_grad) for t in (*model.parameters(), *model.buffers()))


def inference_runner(
    model: DcaseNetModule,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    backend: str = "torch",
) -> DcaseNetModule:
    """The fastest exact way to run ``model`` forward now: an optimised copy, kept in ``model.inference_copies``.

    The inference pipeline calls it once per :func:`~dcasenet_hub.inference.iterate`. The copy is rebuilt when the
    model may have new weights (see :class:`~dcasenet_hub.models.InferenceCopies`: training mode, a loaded state
    dict, a backward pass, replaced tensors; ``model.inference_copies.clear()`` after editing weights by hand), and
    it holds a second copy of the weights for as long as the model lives. A model that is already an inference
    copy is returned as it is when ``dtype`` does not ask for another precision.

    Args:
        model: The model to run.
        dtype: ``None`` (exact fp32, the default), ``"bf16"`` / ``"fp16"`` (autocast, approximate), or ``"int8"``
            (the onnxruntime graph with quantized trunk convolutions, CPU; approximate).
        device: Device to run on (default: the model's).
        backend: ``"torch"`` or ``"onnxruntime"`` (CPU, fp32 or int8; needs the ``onnx`` extra).

    Example:
        >>> from dcasenet_hub import build_model
        >>> model = build_model("v3", seed=0).eval()
        >>> inference_runner(model) is inference_runner(model)
        True
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    target = resolve_device(device, model=model)
    int8 = is_int8(dtype)
    if isinstance(model.runtime, (OnnxRuntime, FastRuntime)) and int8:
        raise options_error("dtype", dtype, "quantizes a model's weights; pass the DcaseNet loaded from its "
                                            "checkpoint, not an ONNX graph or an optimize_for_inference copy")
    if isinstance(model.runtime, OnnxRuntime):
        return model
    # resolved without the device: optimize_for_inference, which makes the copy, gives the fp16-on-CPU advice once
    if isinstance(model.runtime, FastRuntime) and (dtype is None or resolve_dtype(dtype) ==
                                                   model.runtime.options.dtype):
        return model if next(model.parameters()).device == target else optimize_for_inference(model, device=target)
    key = (INT8 if int8 else resolve_dtype(dtype), target, backend, _tensors(model))
    cached = model.inference_copies.get(key)
    if cached is not None:
        return cached
    if backend == "onnxruntime" or int8:
        if key[0] not in (torch.float32, INT8) or target.type != "cpu":
            raise ValueError("The onnxruntime backend runs fp32 or int8 on CPU; use backend='torch' for other "
                             "dtypes/devices")
        if int8 and cpu_int8_dot_products() is False:
            logger.warning("dtype='int8' on a CPU without VNNI or AMX-INT8 is usually slower than fp32 "
                           "(docs/performance.md, 'int8 on the CPU'); `dcasenet-hub bench` measures both here")
        fast = onnxruntime_model(model, int8=int8)
    else:
        fast = optimize_for_inference(model, dtype=key[0], device=target)
    model.inference_copies.put(model, key, fast)
    return fast
