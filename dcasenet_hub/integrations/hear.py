"""The HEAR 2021 benchmark API, so DcaseNet can be scored by the HEAR suite as is.

``hear-validator dcasenet_hub.hear`` / ``heareval`` call :func:`load_model`, then :func:`get_scene_embeddings` and
:func:`get_timestamp_embeddings` with batches of equal-length audio at ``model.sample_rate`` (48000: an exact 2:1
resampling to the network's 24 kHz). Timestamp embeddings are the 512-d frame embeddings every
:data:`TIMESTAMP_HOP_S` (40 ms, within the <= 50 ms HEAR suggests; each computed exactly by shifted passes), regular
at any length as HEAR requires; ``load_model(..., hop=0.8)`` gives the network's own grid. Scene embeddings are the
clip embedding (one pass, independent of the hop). Why 40 ms and what it costs: docs/outputs.md, "HEAR and
torch.hub".

Example:
    >>> import torch
    >>> from dcasenet_hub import hear
    >>> model = hear.load_model()                                        # doctest: +SKIP
    >>> emb, ts = hear.get_timestamp_embeddings(torch.zeros(2, 96000), model)  # doctest: +SKIP
    >>> emb.shape, ts[0, :3]                                              # doctest: +SKIP
    (torch.Size([2, 41, 512]), tensor([390., 430., 470.]))
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Rate HEAR passes audio at.
SAMPLE_RATE = 48000
#: Default time between timestamp embeddings in seconds (HEAR suggests <= 50 ms; the network's own step is 0.8 s).
TIMESTAMP_HOP_S = 0.04


class HearModel(nn.Module):
    """A :class:`~dcasenet_hub.DcaseNet` with the attributes HEAR reads.

    Attributes:
        sample_rate: 48000.
        scene_embedding_size: 512.
        timestamp_embedding_size: 512.
        hop_s: Time between timestamp embeddings in seconds (default :data:`TIMESTAMP_HOP_S`).
        model: The wrapped network.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(self, model: nn.Module, *, hop: float = TIMESTAMP_HOP_S) -> None:
        super().__init__()
        from dcasenet_hub.inference.options import hop_frames

        hop_frames(hop, model)  # a clear ValueError now rather than at the first batch
        self.model = model.eval()
        self.hop_s = float(hop)
        self.scene_embedding_size = int(model.embedding_dim)
        self.timestamp_embedding_size = int(model.embedding_dim)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return get_timestamp_embeddings(audio, self)


def load_model(model_file_path: str = "", *, hop: float = TIMESTAMP_HOP_S, **kwargs: Any) -> HearModel:
    """Load DcaseNet for HEAR.

    Args:
        model_file_path: A manifest id, local folder, ``.safetensors`` or authors' ``.pt`` file; ``""`` loads the
            published ``dcasenet-v3``.
        hop: Time between timestamp embeddings in seconds: one of
            :func:`dcasenet_hub.inference.allowed_hops` (default 0.04; 0.8 is the network's own step, 20 times
            cheaper).
        kwargs: Passed to :func:`dcasenet_hub.from_pretrained`.

    Example:
        >>> model = load_model("dcasenet-v3", hop=0.1)   # doctest: +SKIP
    """
    from dcasenet_hub.inference.model import from_pretrained
    from dcasenet_hub.inference.settings import untrained_embeddings_warning, warn_once

    model = from_pretrained(model_file_path or "dcasenet-v3", **kwargs)
    if not model.config.trained_tasks:
        warn_once(logger, model, untrained_embeddings_warning(model.config))
    return HearModel(model, hop=hop)


def _as_tensor(audio: Any) -> torch.Tensor:
    """HEAR passes tensors; numpy arrays (what users have at hand) are taken as they are."""
    if isinstance(audio, torch.Tensor):
        return audio
    import numpy as np

    if isinstance(audio, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(audio))
    raise TypeError(f"audio must be a torch.Tensor or numpy array of shape (n_sounds, n_samples), got "
                    f"{type(audio).__name__}")


def _embed(audio: torch.Tensor, model: HearModel, *, hop: float | None = None) -> list[Any]:
    from dcasenet_hub.inference.pipeline import embed

    if not isinstance(model, HearModel):
        raise TypeError(f"model must come from dcasenet_hub.hear.load_model(), got {type(model).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    if audio.shape[0] == 0:
        raise ValueError(f"audio holds no sounds (shape {tuple(audio.shape)}); pass at least one (n_sounds >= 1)")
    device = next(model.model.parameters()).device
    # the untrained-weights warning is said once per model (load_model already said it)
    return embed(model.model, [a for a in audio.detach().float()], sample_rate=model.sample_rate, device=device,
                 workers=0, hop=hop)


def get_timestamp_embeddings(audio: Any, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame embeddings and their timestamps.

    Costs 20 network passes per sound at the default 40 ms hop (``0.8 / model.hop_s`` in general):
    ``load_model(hop=0.8)`` costs one, as :func:`get_scene_embeddings` does.

    Args:
        audio: ``(n_sounds, n_samples)`` float in [-1, 1] at ``model.sample_rate``, all the same length; a
            torch tensor (as HEAR passes) or a numpy array.
        model: From :func:`load_model`.

    Returns:
        ``(embeddings (n_sounds, n_timestamps, 512) float32, timestamps (n_sounds, n_timestamps) in ms)``, torch
        tensors on the audio's device (CPU for numpy input); one timestamp every ``model.hop_s`` (40 ms by default)
        from 390 ms. Sounds of the same length get the same timestamps.
    """
    audio = _as_tensor(audio)
    embs = _embed(audio, model, hop=model.hop_s)
    frames = torch.stack([torch.from_numpy(e.frame) for e in embs]).to(audio.device)
    times = torch.stack([torch.from_numpy((e.frame_times.astype("float64") * 1000.0).astype("float32")) for e in embs]).to(audio.device)
    return frames, times


def get_scene_embeddings(audio: Any, model: HearModel) -> torch.Tensor:
    """One embedding per sound: the mean of its 0.8 s-step frame embeddings, ``(n_sounds, 512)`` float32.

    One network pass per sound, whatever ``model.hop_s``. ``audio`` is a torch tensor (as HEAR passes) or a numpy
    array, ``(n_sounds, n_samples)`` at ``model.sample_rate``; the result is on the audio's device (CPU for numpy).
    """
    audio = _as_tensor(audio)
    embs = _embed(audio, model)
    return torch.stack([torch.from_numpy(e.clip) for e in embs]).to(audio.device)


__all__ = ["SAMPLE_RATE", "TIMESTAMP_HOP_S", "HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
