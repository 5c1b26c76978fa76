"""Building blocks of the DcaseNet architectures: convolution blocks, squeeze-and-excitation residual blocks, heads.

Module and parameter names are the authors' (``models/DcaseNet.py``), so their ``state_dict`` files load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, then average pooling (Cao et al.'s CRNN block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class SELayer(nn.Module):
    """Squeeze-and-excitation over channels (global average of every non-channel axis)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(2).mean(-1))
        return x * y.view(*y.shape, *([1] * (x.dim() - 2)))


#: Below this many input columns a strided 3x3 bf16 convolution on CPU is computed in float32 (see
#: :func:`strided_conv`).
_BF16_STRIDED_MIN_WIDTH = 4


def _cpu_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when a CPU convolution of ``x`` with ``weight`` would run in bfloat16 (bf16 tensors or bf16 autocast)."""
    if x.device.type != "cpu":
        return False
    if x.dtype == torch.bfloat16 or weight.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def strided_conv(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, computed in float32 where oneDNN's bf16 strided kernel reads uninitialised memory.

    oneDNN's AMX bf16 convolution (``brg_conv_fwd:avx10_1_512_amx`` in torch 2.13, oneDNN 3.x; seen on Intel Xeon
    with ``amx_bf16``) returns NaN, forward and backward, for a stride-2 3x3 convolution whose input has only one or
    two columns, whenever the memory it was handed back held a bf16 NaN bit pattern (which the fp32 low half-words
    of earlier tensors often are). v2's and v3's strided scene blocks meet that shape for inputs under ~3 s, so bf16
    training or inference gave NaN one run in four after another model had run in the process. Such inputs are
    tiny, so computing them in float32 costs nothing measurable and is closer to the fp32 result. The output keeps
    the dtype the convolution would have produced.
    """
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride,)
    if max(stride) == 1 or x.shape[-1] >= _BF16_STRIDED_MIN_WIDTH or not _cpu_bf16(x, conv.weight):
        return conv(x)
    with torch.autocast("cpu", enabled=False):
        bias = conv.bias.float() if conv.bias is not None else None
        y = conv._conv_forward(x.float(), conv.weight.float(), bias)
    return y.to(torch.bfloat16)


class SEBasicBlock(nn.Module):
    """SE residual basic block (the authors' DCASE 2020 Task 1a block), in 2-D or 1-D.

    A projection shortcut (1x1 convolution + batch norm) is used when the channel count changes.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, reduction: int = 16, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv1 = conv(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.se = SELayer(planes, reduction)
        if inplanes != planes or stride != 1:
            self.downsample: nn.Module = nn.Sequential(
                conv(inplanes, planes, 1, stride=stride, bias=False), norm(planes)
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x)
        out = F.relu(self.bn1(strided_conv(self.conv1, x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + residual)


def tag_dense(in_features: int, n_tags: int) -> nn.Sequential:
    """Akiyama et al.'s 'Dense' tag head: two 1024-unit layers with ReLU and dropout."""
    return nn.Sequential(
        nn.Linear(in_features, 1024),
        nn.ReLU(),
        nn.Dropout(p=0.2),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Dropout(p=0.1),
        nn.Linear(1024, n_tags),
    )


def init_linear(layer: nn.Linear) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
