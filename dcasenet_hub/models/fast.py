"""Inference-only fast path for :class:`~dcasenet_hub.DcaseNet` (public: ``dcasenet_hub.optimize_for_inference``).

:func:`optimize_for_inference` returns a copy of the model, of the same class, with batch-norm folded into the
convolutions (in float64), in-place ReLUs, channels-last layout, inference mode and optionally bf16 / fp16
(``dtype=``, approximate). Its :class:`FastRuntime` keeps ``forward``'s signature and returns float32 outputs on the
model's device; ``train()`` and loading weights are refused. fp32 outputs match the original within
:data:`FP32_TOLERANCE`, low precision within :data:`LOW_PRECISION_TOLERANCE` (tests/test_perf_smoke.py checks both).
Why each step, and why not ``torch.compile``: docs/performance.md.

Example:
    >>> import torch
    >>> from dcasenet_hub import build_model
    >>> from dcasenet_hub.models.fast import optimize_for_inference
    >>> model = build_model("v3", seed=0).eval()
    >>> fast = optimize_for_inference(model)
    >>> mel = torch.randn(1, 1, 128, 251)
    >>> with torch.inference_mode():
    ...     ref = model(mel).clip_embeddings
    >>> bool((fast(mel).clip_embeddings - ref).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcasenet_hub.devices import resolve_dtype
from dcasenet_hub.models.blocks import ConvBlock, SEBasicBlock, strided_conv
from dcasenet_hub.models.dcasenet import DcaseNetModule, DcaseNetOutput, Runtime

logger = logging.getLogger(__name__)

#: Max absolute difference to the unoptimised fp32 model allowed for the exact (fp32) fast path, relative to the
#: output's own scale (``max(1, max|ref|)``); the folded kernels' rounding stays well below it.
FP32_TOLERANCE = 1e-5
#: Max absolute difference allowed for bf16 / fp16 paths, relative to the output's own scale
#: (``max|fast - ref| <= LOW_PRECISION_TOLERANCE * max(1, max|ref|)``); measured margins in docs/performance.md.
LOW_PRECISION_TOLERANCE = 0.04



# ----------------------------------------------------------------------------------------------------------------
# Batch-norm folding
# ----------------------------------------------------------------------------------------------------------------


def _fold(conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Conv1d | nn.Conv2d:
    """``conv`` changed in place to compute ``bn(conv(x))`` with eval-mode batch-norm statistics.

    Only called on the deep copy :func:`optimize_for_inference` makes, so the original model is untouched. In place,
    so that no new convolutions are built (and randomly initialised). The per-channel scale and the bias are computed
    in float64; float32 weights are scaled in their own dtype (one rounding more than float64 maths, ~1e-7 relative,
    and several times faster).
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("Cannot fold a batch-norm without running statistics (track_running_stats=False).")
    w = conv.weight
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                              device=w.device)
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    dtype = conv.weight.dtype
    with torch.no_grad():
        shape = (-1, *([1] * (w.dim() - 1)))
        if dtype in (torch.float32, torch.float64):
            conv.weight.mul_(scale.to(dtype).view(shape))
        else:  # half-precision weights: one rounding, from float64
            conv.weight.copy_((w.double() * scale.view(shape)).to(dtype))
        bias = (b * scale + shift).to(dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(bias, requires_grad=False)
        else:
            conv.bias.copy_(bias)
    return conv


class _FoldedConvBlock(nn.Module):
    """:class:`~dcasenet_hub.models.blocks.ConvBlock` with both batch-norms folded; same ``forward(x, pool_size)``."""

    def __init__(self, block: ConvBlock) -> None:
        super().__init__()
        self.conv1 = _fold(block.conv1, block.bn1)
        self.conv2 = _fold(block.conv2, block.bn2)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = torch.relu_(self.conv1(x))
        x = torch.relu_(self.conv2(x))
        return F.avg_pool2d(x, kernel_size=pool_size)


class _FoldedSEBasicBlock(nn.Module):
    """:class:`~dcasenet_hub.models.blocks.SEBasicBlock` with its batch-norms (shortcut's included) folded."""

    def __init__(self, block: SEBasicBlock) -> None:
        super().__init__()
        self.conv1 = _fold(block.conv1, block.bn1)
        self.conv2 = _fold(block.conv2, block.bn2)
        self.se = block.se
        if isinstance(block.downsample, nn.Sequential):
            conv, bn = block.downsample
            self.downsample: nn.Module = _fold(conv, bn)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x)
        out = torch.relu_(strided_conv(self.conv1, x))
        out = self.se(self.conv2(out))
        return torch.relu_(out.add_(residual))


def _fold_tree(module: nn.Module) -> None:
    """Replace every ConvBlock / SEBasicBlock below ``module`` by its folded version, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvBlock):
            setattr(module, name, _FoldedConvBlock(child))
        elif isinstance(child, SEBasicBlock):
            setattr(module, name, _FoldedSEBasicBlock(child))
        else:
            _fold_tree(child)


# ----------------------------------------------------------------------------------------------------------------
# The optimised model
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastOptions:
    """How an optimised copy runs (see :func:`optimize_for_inference`)."""

    dtype: torch.dtype = torch.float32
    channels_last: bool = True
    folded: bool = True
    #: Let cuDNN use TF32 for fp32 convolutions and recurrences on NVIDIA GPUs (faster, ~1e-3 relative error).
    #: Off by default so fp32 stays exact on every device; no effect on CPU.
    tf32: bool = False

    @property
    def exact(self) -> bool:
        """True for the exact fp32 paths (within ``FP32_TOLERANCE`` of the reference; TF32 off)."""
        return self.dtype == torch.float32 and not self.tf32


class FastRuntime(Runtime):
    """How a copy made by :func:`optimize_for_inference` runs ``forward``: under ``torch.inference_mode``, in
    ``options.dtype`` (autocast for bf16/fp16), channels-last when asked, TF32 only when asked; the outputs are always
    float32 on the model's device. The copy's own layers are the folded ones."""

    def __init__(self, options: FastOptions) -> None:
        self.options = options

    def forward(self, network: DcaseNetModule, mel: torch.Tensor, tasks: Any, *,
                conv_embeddings: bool) -> DcaseNetOutput:
        weight = network.conv_block1.conv1.weight
        with torch.inference_mode(), self._autocast(weight.device), self._tf32(weight.device):
            x = mel.to(device=weight.device, dtype=weight.dtype)
            if self.options.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = network.forward_layers(x, tasks, conv_embeddings=conv_embeddings)
        for f in fields(out):
            value = getattr(out, f.name)
            if value is not None and value.is_floating_point() and value.dtype != torch.float32:
                setattr(out, f.name, value.float())
        return out

    def _tf32(self, device: torch.device) -> contextlib.AbstractContextManager:
        # torch lets cuDNN use TF32 for fp32 convolutions by default (torch.backends.cudnn.allow_tf32 = True), which
        # is not exact; the exact default turns it off for this forward only
        if device.type != "cuda":
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                          benchmark=torch.backends.cudnn.benchmark,
                                          deterministic=torch.backends.cudnn.deterministic,
                                          allow_tf32=self.options.tf32)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.options.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.options.dtype)

    def cannot_train(self) -> str:
        return ("This model was optimised for inference (batch-norm folded into the convolutions) and cannot be "
                "trained. Train the original model and call optimize_for_inference() again.")

    def cannot_load(self, source: str) -> str:
        return (f"Cannot load {source} into an inference-optimised model (its batch-norms are folded). Load it into "
                "the original DcaseNet and call optimize_for_inference() again.")


def optimize_for_inference(
    model: DcaseNetModule,
    *,
    dtype: torch.dtype | str | None = None,
    channels_last: bool | None = None,
    fold_batchnorm: bool = True,
    device: torch.device | str | None = None,
    tf32: bool = False,
) -> DcaseNetModule:
    """A faster inference-only copy of ``model``: same class, same ``forward`` signature and outputs.

    The original model is not modified. An already optimised model is returned as it is when the options agree.

    Args:
        model: A :class:`DcaseNet` (its weights and batch-norm statistics are used as they are now).
        dtype: ``None``/``"fp32"`` (exact, the default), ``"bf16"`` (CPU or CUDA autocast) or ``"fp16"`` (CUDA
            autocast; allowed on CPU with a warning). Low precision is approximate: see
            ``LOW_PRECISION_TOLERANCE``.
        channels_last: Run convolutions in channels-last layout; ``None`` picks it (faster on the CPUs and GPUs
            measured in docs/performance.md).
        fold_batchnorm: Fold batch-norm into the convolutions (exact up to rounding).
        device: Move the copy to this device (default: where ``model`` is).
        tf32: On NVIDIA GPUs, let cuDNN run fp32 convolutions and GRUs in TF32 (faster; outputs differ by about
            1e-3 relative). Default off: fp32 is exact on every device.

    Returns:
        A copy in eval mode whose ``runtime`` is a :class:`FastRuntime`. (onnxruntime instead of torch:
        :func:`dcasenet_hub.export.onnxruntime_model`, or ``backend="onnxruntime"`` in ``embed``/``predict``.)

    Example:
        >>> from dcasenet_hub import build_model
        >>> fast = optimize_for_inference(build_model("v2").eval())
        >>> fast.runtime.options.exact, fast.arch
        (True, 'v2')
    """
    if not isinstance(model, DcaseNetModule):
        raise TypeError(f"optimize_for_inference needs a DcaseNetModule, got {type(model).__name__}")
    target = torch.device(device) if device is not None else next(model.parameters()).device
    resolved = resolve_dtype(dtype, device=target)
    options = FastOptions(
        dtype=resolved,
        channels_last=True if channels_last is None else bool(channels_last),
        folded=bool(fold_batchnorm),
        tf32=bool(tf32),
    )
    current = model.runtime
    if current is not None and not isinstance(current, FastRuntime):
        raise ValueError("This model already runs through another backend; optimise the original model instead.")
    if isinstance(current, FastRuntime):
        if current.options == options and next(model.parameters()).device == target:
            return model
        if current.options.folded and not options.folded:
            raise ValueError("This model's batch-norms are already folded; optimise the original model instead.")
    if model.training:
        logger.debug("optimize_for_inference: the copy is put in eval mode (the original is left as it is)")
    fast = copy.deepcopy(model)
    fast.eval()
    if options.folded:
        _fold_tree(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    fast.to(target)
    if options.channels_last:
        fast.to(memory_format=torch.channels_last)
    fast.runtime = FastRuntime(options)
    return fast


def is_optimized(model: nn.Module) -> bool:
    """True when ``model`` came from :func:`optimize_for_inference`."""
    return isinstance(getattr(model, "runtime", None), FastRuntime)
