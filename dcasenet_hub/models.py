"""The three DcaseNet architectures of the paper (Fig. 1 a, b, c) built from shared blocks.

* **v3** is the authors' network exactly (their ``models/DcaseNet.py``; module names are kept so that their
  released ``state_dict`` files load strictly without a key map).
* **v1** and **v2** were never published; they are reconstructed from the paper's text (docs/architectures.md gives
  every decision and the sentence it rests on).

Input: log-mel ``(batch, 1, 128, frames)`` from :func:`dcasenet_hub.log_mel`. The trunk pools time by 2, 2, 2, 5
(one step per 40 feature frames = 800 ms); event probabilities are repeated 8 times to the 100 ms label grid,
as in the authors' code.

Example:
    >>> import torch
    >>> from dcasenet_hub import build_model
    >>> model = build_model("v3").eval()
    >>> out = model(torch.randn(2, 1, 128, 251), tasks=("scene", "embeddings"))
    >>> out.scene_logits.shape, out.clip_embeddings.shape, out.tag_logits is None
    (torch.Size([2, 10]), torch.Size([2, 512]), True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ARCHS, TASKS, ModelConfig

logger = logging.getLogger(__name__)

#: Feature frames per trunk output step (pooling 2 * 2 * 2 * 5).
TIME_REDUCTION = 40
#: Event outputs per trunk step (800 ms -> 100 ms), as the authors' ``repeat_interleave(8)``.
EVENT_REPEAT = 8


class InputTooShortError(ValueError):
    """The input has fewer feature frames than the network's pooling allows (40 = 0.8 s)."""


@dataclass
class DcaseNetOutput:
    """What :meth:`DcaseNet.forward` returns; fields of heads that were not asked for are ``None``.

    Attributes:
        scene_logits: ``(B, n_scenes)`` scene logits (softmax gives probabilities).
        tag_logits: ``(B, n_tags)`` tag logits (sigmoid gives probabilities).
        event_probs: ``(B, T_ev, n_events)`` event probabilities on the 100 ms grid (authors' output).
        frame_embeddings: ``(B, T', D)`` recurrent features, one per 800 ms step.
        frame_times: ``(T',)`` centre time of each step in seconds.
        clip_embeddings: ``(B, D)`` time average of ``frame_embeddings`` (the tag head's input).
        scene_embeddings: ``(B, 128)`` scene code layer (computed with ``"scene"``).
        conv_embeddings: ``(B, T', 512)`` the convolutional trunk's output averaged over frequency, one per 800 ms
            step: the GRUs' input (v3: common and task-specific blocks concatenated); set with ``"embeddings"``
            when asked for (``forward(..., conv_embeddings=True)``).
    """

    scene_logits: torch.Tensor | None = None
    tag_logits: torch.Tensor | None = None
    event_probs: torch.Tensor | None = None
    frame_embeddings: torch.Tensor | None = None
    frame_times: torch.Tensor | None = None
    clip_embeddings: torch.Tensor | None = None
    scene_embeddings: torch.Tensor | None = None
    conv_embeddings: torch.Tensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The fields that are set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# ----------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------


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


def _tag_dense(in_features: int, n_tags: int) -> nn.Sequential:
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


def _init_linear(layer: nn.Linear) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _frame_times(n_steps: int, hop_s: float, device: torch.device) -> torch.Tensor:
    """Centre of each 40-frame trunk step in seconds (frame ``j`` is centred at ``j * hop``)."""
    steps = torch.arange(n_steps, device=device, dtype=torch.float32)
    return (steps * TIME_REDUCTION + (TIME_REDUCTION - 1) / 2) * hop_s


def _normalise_tasks(tasks: Iterable[str] | str | None) -> frozenset[str]:
    if tasks is None:
        return frozenset(TASKS)
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = frozenset(tasks)
    unknown = sorted(tasks - set(TASKS))
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown}. Known: {', '.join(TASKS)}")
    if not tasks:
        raise ValueError(f"Ask for at least one task of {', '.join(TASKS)}")
    return tasks


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


class DcaseNet(nn.Module):
    """DcaseNet v1, v2 or v3 with scene, tag and event heads.

    Build one with :func:`build_model` (random weights) or :meth:`from_pretrained`.

    Args:
        config: Architecture, label names and front-end settings; head sizes follow the label lists.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        arch = self.config.arch
        n_scenes, n_tags, n_events = (len(self.config.scene_labels), len(self.config.tag_labels),
                                      len(self.config.event_labels))
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(64, 128)
        self.conv_block3 = ConvBlock(128, 256)
        if arch == "v3":
            # Fig. 1c: the last convolution block and the GRU are split into a common path (…_1) and a
            # task-specific path (…_2) whose outputs are concatenated.
            self.conv_block4_1 = ConvBlock(256, 256)
            self.conv_block4_2 = ConvBlock(256, 256)
            self.gru_1 = nn.GRU(512, 128, num_layers=1, batch_first=True, bidirectional=True)
            self.gru_2 = nn.GRU(512, 128, num_layers=1, batch_first=True, bidirectional=True)
            self.event_fc = nn.Linear(256, n_events)
            self.layer_ASC = nn.Sequential(
                SEBasicBlock(256, 384, stride=2), SEBasicBlock(384, 384), SEBasicBlock(384, 384)
            )
            self.code_ASC = nn.Linear(384, 128)
        else:
            # Cao et al.'s CRNN: 8 convolutions up to 512 filters, one bidirectional GRU with 512 outputs.
            self.conv_block4 = ConvBlock(256, 512)
            self.gru = nn.GRU(512, 256, num_layers=1, batch_first=True, bidirectional=True)
            self.event_fc = nn.Linear(512, n_events)
            if arch == "v1":
                # Fig. 1a: scene 'CNN' on top of the recurrent (event) features: a 1-D SE residual block over time.
                self.asc_block = SEBasicBlock(512, 448, dims=1)
                self.code_ASC = nn.Linear(448, 128)
            else:
                # Fig. 1b: scene branch right after the convolution blocks: a 2-D SE residual block.
                self.asc_block = SEBasicBlock(512, 240, stride=2)
                self.code_ASC = nn.Linear(240, 128)
        self.fc_ASC = nn.Linear(128, n_scenes)
        self.layer_TAG = _tag_dense(512, n_tags)
        for layer in (self.event_fc,):
            _init_linear(layer)

    # -- properties -------------------------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def embedding_dim(self) -> int:
        """Size ``D`` of frame and clip embeddings (512 for every architecture)."""
        return 512

    @property
    def frame_hop_s(self) -> float:
        """Time between frame embeddings (0.8 s)."""
        return TIME_REDUCTION / self.config.frontend.frame_rate

    @property
    def event_hop_s(self) -> float:
        """Time between event probabilities (0.1 s)."""
        return self.frame_hop_s / EVENT_REPEAT

    def embedding_size(self, *, layer: str = "gru", pooling: str = "mean") -> Any:
        """Frame and clip embedding sizes for a layer and pooling: see :func:`dcasenet_hub.inference.embedding_size`.

        Example:
            >>> build_model("v3").embedding_size(layer="conv", pooling="mean+max")
            EmbeddingSize(frame=512, clip=1024)
        """
        from .inference import embedding_size

        return embedding_size(self, layer=layer, pooling=pooling)

    def num_parameters(self) -> int:
        """Number of parameters (buffers such as batch-norm statistics excluded)."""
        return sum(p.numel() for p in self.parameters())

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(self, mel: torch.Tensor, tasks: Sequence[str] | str | None = None, *,
                conv_embeddings: bool = False) -> DcaseNetOutput:
        """Run the heads named in ``tasks`` (default: all) in one pass.

        Args:
            mel: ``(batch, 1, n_mels, frames)`` normalised log-mel features, ``frames >= 40``.
            tasks: Subset of ``("scene", "tags", "events", "embeddings")``.
            conv_embeddings: With ``"embeddings"``, also return the trunk's output averaged over frequency
                (``DcaseNetOutput.conv_embeddings``, the GRUs' input).

        Returns:
            A :class:`DcaseNetOutput` with the requested fields set.

        Raises:
            InputTooShortError: fewer than 40 frames (tile the input, as :mod:`dcasenet_hub.inference` does).
            ValueError: wrong input shape or unknown task.
        """
        wanted = _normalise_tasks(tasks)
        if mel.dim() != 4 or mel.shape[1] != 1:
            raise ValueError(f"Expected mel of shape (batch, 1, n_mels, frames), got {tuple(mel.shape)}")
        if mel.shape[-1] < TIME_REDUCTION:
            raise InputTooShortError(
                f"Input has {mel.shape[-1]} frames; DcaseNet needs at least {TIME_REDUCTION} "
                f"({TIME_REDUCTION / self.config.frontend.frame_rate:.1f} s). Tile it in time or use "
                "model.embed()/model.predict(), which tile short inputs as the authors did."
            )
        out = DcaseNetOutput()
        need_rnn = bool(wanted & {"tags", "events", "embeddings"})
        x = self.conv_block1(mel, (2, 2))
        x = self.conv_block2(x, (2, 2))
        x = self.conv_block3(x, (2, 2))
        if self.config.arch == "v3":
            x_2 = self.conv_block4_2(x, (2, 5))
            if "scene" in wanted:
                code = self.code_ASC(self.layer_ASC(x_2).mean(dim=(2, 3)))
                out.scene_embeddings = code
                out.scene_logits = self.fc_ASC(code)
            if not need_rnn:
                return out
            x_1 = self.conv_block4_1(x, (2, 5))  # common path: only the recurrent part needs it
            seq = torch.cat([x_1, x_2], dim=1).mean(dim=2).transpose(1, 2)
            h_1, _ = self.gru_1(seq)
            h_2, _ = self.gru_2(seq)
            event_features = h_2
            frames = torch.cat([h_1, h_2], dim=-1)
        else:
            x = self.conv_block4(x, (2, 5))
            if self.config.arch == "v2" and "scene" in wanted:
                code = self.code_ASC(self.asc_block(x).mean(dim=(2, 3)))
                out.scene_embeddings = code
                out.scene_logits = self.fc_ASC(code)
            if not (need_rnn or (self.config.arch == "v1" and "scene" in wanted)):
                return out
            seq = x.mean(dim=2).transpose(1, 2)
            frames, _ = self.gru(seq)
            event_features = frames
            if self.config.arch == "v1" and "scene" in wanted:
                code = self.code_ASC(self.asc_block(frames.transpose(1, 2)).mean(dim=2))
                out.scene_embeddings = code
                out.scene_logits = self.fc_ASC(code)
        if "events" in wanted:
            probs = torch.sigmoid(self.event_fc(event_features))
            out.event_probs = probs.repeat_interleave(EVENT_REPEAT, dim=1)
        if wanted & {"tags", "embeddings"}:
            clip = frames.mean(dim=1)
            if "tags" in wanted:
                out.tag_logits = self.layer_TAG(clip)
            if "embeddings" in wanted:
                out.clip_embeddings = clip
                out.frame_embeddings = frames
                if conv_embeddings:
                    out.conv_embeddings = seq
                out.frame_times = _frame_times(frames.shape[1], 1.0 / self.config.frontend.frame_rate, frames.device)
        return out

    # -- weights ----------------------------------------------------------------------------------------------

    def load_state_dict_strict(self, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
        """Load ``state_dict`` exactly: any missing, unexpected or mis-shaped key is refused, listing them all.

        Raises:
            dcasenet_hub.CheckpointMismatchError: the keys or shapes do not match this architecture.
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shapes = sorted(
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(state_dict)
            if tuple(state_dict[k].shape) != tuple(own[k].shape)
        )
        if missing or unexpected or shapes:
            parts = [f"{source} does not match DcaseNet-{self.arch}"
                     f" ({len(self.config.scene_labels)} scenes, {len(self.config.tag_labels)} tags,"
                     f" {len(self.config.event_labels)} events)."]
            if missing:
                parts.append(f"Missing keys ({len(missing)}): {', '.join(missing)}")
            if unexpected:
                parts.append(f"Unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
            if shapes:
                parts.append(f"Shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
            parts.append("Pass the right arch (v1/v2/v3) or a checkpoint of this architecture.")
            raise CheckpointMismatchError("\n".join(parts))
        self.load_state_dict(state_dict, strict=True)

    # -- high-level API (implemented in dcasenet_hub.inference) ---------------------------------------------------

    def embed(self, x: Any, *, sample_rate: int | None = None, **kwargs: Any) -> Any:
        """Frame and clip embeddings of audio: see :func:`dcasenet_hub.inference.embed`."""
        from .inference import embed

        return embed(self, x, sample_rate=sample_rate, **kwargs)

    def predict(self, x: Any, *, sample_rate: int | None = None, **kwargs: Any) -> Any:
        """Scene, tag and event predictions with label names: see :func:`dcasenet_hub.inference.predict`."""
        from .inference import predict

        return predict(self, x, sample_rate=sample_rate, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> DcaseNet:
        """Load a model by manifest id, local directory/file or Hugging Face repo id.

        See :func:`dcasenet_hub.hub.from_pretrained` for the options.

        Example:
            >>> model = DcaseNet.from_pretrained("dcasenet-v3")  # doctest: +SKIP
        """
        from .hub import from_pretrained

        return from_pretrained(name_or_path, **kwargs)

    def save_pretrained(self, save_directory: str | Path, *, repo_id: str | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + a ``README.md`` model card (atomically).

        See :func:`dcasenet_hub.hub.save_pretrained`. The folder loads back with :meth:`from_pretrained`.

        Example:
            >>> model.save_pretrained("my-dcasenet/")   # doctest: +SKIP
        """
        from .hub import save_pretrained

        return save_pretrained(self, save_directory, repo_id=repo_id)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload this model (config, safetensors, model card) to the Hugging Face Hub repo ``repo_id``.

        See :func:`dcasenet_hub.hub.push_to_hub` for the options (``commit_message``, ``private``, ``token``,
        ``branch``, ``create_pr``).

        Example:
            >>> model.push_to_hub("my-org/dcasenet-v3-finetuned")   # doctest: +SKIP
        """
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the architecture it is loaded into."""


def build_model(arch: str = "v3", *, config: ModelConfig | None = None, seed: int | None = None) -> DcaseNet:
    """A randomly initialised DcaseNet.

    Args:
        arch: ``"v1"``, ``"v2"`` or ``"v3"`` (also accepted: ``"dcasenet-v3"``).
        config: Full config (labels, front-end); ``arch`` is taken from it when given.
        seed: Seed the initialisation for reproducibility.

    Example:
        >>> build_model("v2").num_parameters()
        9320936
    """
    if config is None:
        a = arch.lower().removeprefix("dcasenet-").removeprefix("dcasenet_")
        if a not in ARCHS:
            raise ValueError(f"Unknown architecture {arch!r}. Known: {', '.join(ARCHS)}")
        config = ModelConfig(arch=a)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DcaseNet(config)
    return DcaseNet(config)
