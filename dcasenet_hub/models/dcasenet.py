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
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from dcasenet_hub.config import (
    EVENT_REPEAT,
    TASKS,
    TIME_REDUCTION,
    ModelConfig,
    normalise_arch,
)
from dcasenet_hub.errors import CheckpointMismatchError, InputTooShortError
from dcasenet_hub.models.blocks import ConvBlock, SEBasicBlock, init_linear, tag_dense

logger = logging.getLogger(__name__)


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


def frame_times(n_steps: int, hop_s: float, device: torch.device) -> torch.Tensor:
    """Centre of each 40-frame trunk step in seconds (frame ``j`` is centred at ``j * hop``)."""
    steps = torch.arange(n_steps, device=device, dtype=torch.float32)
    return (steps * TIME_REDUCTION + (TIME_REDUCTION - 1) / 2) * hop_s


def normalise_tasks(tasks: Iterable[str] | str | None) -> frozenset[str]:
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


class Runtime:
    """How an inference-only copy of the network runs ``forward`` (base class of the fast and onnxruntime paths).

    :func:`~dcasenet_hub.models.fast.optimize_for_inference` and
    :func:`~dcasenet_hub.export.runtime.onnxruntime_model` return a copy of the model, of the same class, whose
    ``runtime`` is one of these; such a copy refuses to train or load weights (they are folded or exported).
    """

    def forward(self, network: DcaseNetModule, mel: torch.Tensor, tasks: Sequence[str] | str | None, *,
                conv_embeddings: bool) -> DcaseNetOutput:
        raise NotImplementedError

    def cannot_train(self) -> str:
        """The error message when the copy is asked to train."""
        return "This model is an inference-only copy and cannot be trained; train the original model."

    def cannot_load(self, source: str) -> str:
        """The error message when weights are loaded into the copy."""
        return f"Cannot load {source} into an inference-only copy; load it into the original model."

    def cannot_save(self) -> str | None:
        """Why the copy's tensors must not be saved as its weights, or None when they may be."""
        return None


class InferenceCopies:
    """Inference-only copies of one model (see :func:`dcasenet_hub.inference.inference_runner`), kept on the model.

    Emptied when the model may have new weights: it enters training mode, loads a state dict, runs a forward pass
    with gradients enabled (a parameter frozen when the copy was made may be unfrozen and trained), or a backward
    pass accumulates a gradient into one of its parameters (a graph built before the copy; any training loop, in any
    mode). After editing weights in place by hand (``with torch.no_grad(): ...``), call
    ``model.inference_copies.clear()``. A deep copy or pickle of the model starts with none.
    """

    def __init__(self) -> None:
        self._copies: dict[Any, Any] = {}
        # parameter or model -> its hook's handle, by identity and held weakly: an entry goes with its object, so a
        # newer object at a freed one's address (load_state_dict(assign=True) makes new Parameters) is not taken for it
        self._watched: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def get(self, key: Any) -> Any:
        """The copy stored under ``key``, or None."""
        return self._copies.get(key)

    def put(self, model: nn.Module, key: Any, value: Any) -> None:
        """Keep ``value`` (the only copy kept) until ``model``'s weights may change."""
        self._copies = {key: value}
        if model not in self._watched:
            self._watched[model] = model.register_forward_pre_hook(self._drop_if_grad)
        for p in model.parameters():
            if p.requires_grad and p not in self._watched:
                self._watched[p] = p.register_post_accumulate_grad_hook(self._drop)

    def clear(self) -> None:
        """Drop every copy (they are rebuilt from the weights on the next use)."""
        self._copies = {}

    def _drop(self, _param: torch.Tensor) -> None:
        self._copies = {}

    def _drop_if_grad(self, _model: nn.Module, _args: Any) -> None:
        if torch.is_grad_enabled():
            self._copies = {}

    def __len__(self) -> int:
        return len(self._copies)

    def __deepcopy__(self, memo: dict[int, Any]) -> InferenceCopies:
        return InferenceCopies()

    def __reduce__(self) -> tuple[Any, ...]:
        return (InferenceCopies, ())


def _drop_inference_copies(module: nn.Module, _incompatible: Any) -> None:
    module.inference_copies.clear()


class DcaseNetModule(nn.Module):
    """The network: DcaseNet v1, v2 or v3 with scene, tag and event heads (no loading, no audio).

    Users hold :class:`dcasenet_hub.DcaseNet`, this network plus loading and saving (:mod:`dcasenet_hub.hub`) and
    audio in, results out (:mod:`dcasenet_hub.inference`). Build one with :func:`dcasenet_hub.build_model`.

    Args:
        config: Architecture, label names and front-end settings; head sizes follow the label lists.
    """

    #: How ``forward`` runs: ``None`` = this module's layers in PyTorch; the inference-only copies made by
    #: ``optimize_for_inference`` and ``onnxruntime_model`` hold their :class:`Runtime` here.
    runtime: Runtime | None = None

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.inference_copies = InferenceCopies()
        self.register_load_state_dict_post_hook(_drop_inference_copies)
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
        self.layer_TAG = tag_dense(512, n_tags)
        for layer in (self.event_fc,):
            init_linear(layer)

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

    @property
    def sample_rate(self) -> int:
        """Rate the network expects (24000 Hz); ``embed``/``predict`` resample any other rate to it."""
        return self.config.frontend.sample_rate

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        """Output names per task: ``{"scene": (10 scenes), "tags": (80 tags), "events": (14 events)}``."""
        return {"scene": self.config.scene_labels, "tags": self.config.tag_labels,
                "events": self.config.event_labels}

    def num_parameters(self) -> int:
        """Number of parameters (buffers such as batch-norm statistics excluded)."""
        return sum(p.numel() for p in self.parameters())

    # -- forward ----------------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DcaseNetModule:
        if mode and self.runtime is not None:
            raise RuntimeError(self.runtime.cannot_train())
        if mode:
            self.inference_copies.clear()
        return super().train(mode)

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
            InputTooShortError: fewer than 40 frames (tile the input, as :mod:`dcasenet_hub.inference.pipeline` does).
            ValueError: wrong input shape or unknown task.
        """
        if self.runtime is not None:
            return self.runtime.forward(self, mel, tasks, conv_embeddings=conv_embeddings)
        return self.forward_layers(mel, tasks, conv_embeddings=conv_embeddings)

    def forward_layers(self, mel: torch.Tensor, tasks: Sequence[str] | str | None = None, *,
                       conv_embeddings: bool = False) -> DcaseNetOutput:
        """:meth:`forward` through this module's layers in PyTorch, whatever its ``runtime``."""
        wanted = normalise_tasks(tasks)
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
                out.frame_times = frame_times(frames.shape[1], 1.0 / self.config.frontend.frame_rate, frames.device)
        return out

    # -- weights ----------------------------------------------------------------------------------------------

    def load_state_dict_strict(self, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint",
                               assign: bool = False) -> None:
        """Load ``state_dict`` exactly: any missing, unexpected or mis-shaped key is refused, listing them all.

        Args:
            state_dict: The tensors to load.
            source: Named in the error message.
            assign: Take the tensors themselves (converted to this model's dtypes) instead of copying them into
                the model's own: for a model built on the ``meta`` device, which has no storage to copy into.

        Raises:
            dcasenet_hub.CheckpointMismatchError: the keys or shapes do not match this architecture.
        """
        if self.runtime is not None:
            raise RuntimeError(self.runtime.cannot_load(source))
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
        if not assign:
            self.load_state_dict(state_dict, strict=True)
            return
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True, assign=True)
        left = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        # strict=True covers the state dict, not non-persistent buffers: never hand out tensors without storage
        if left:
            raise RuntimeError(f"{source}: tensors left on the meta device after loading: {', '.join(left)}")


def build_network(
    arch: str = "v3", *, config: ModelConfig | None = None, seed: int | None = None, cls: type | None = None
) -> DcaseNetModule:
    """A randomly initialised network of class ``cls`` (default :class:`DcaseNetModule`).

    Args:
        arch: ``"v1"``, ``"v2"`` or ``"v3"`` (also accepted: ``"dcasenet-v3"``).
        config: Full config (labels, front-end); ``arch`` is taken from it when given.
        seed: Seed the initialisation for reproducibility.

    Example:
        >>> build_network("v2").num_parameters()
        9320936
    """
    cls = cls or DcaseNetModule
    if config is None:
        config = ModelConfig(arch=normalise_arch(arch))
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)
    return cls(config)
