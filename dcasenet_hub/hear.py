"""The HEAR 2021 benchmark API, so DcaseNet can be scored by the HEAR suite as is.

``hear-validator dcasenet_hub.hear`` / ``heareval`` call :func:`load_model`, then :func:`get_scene_embeddings` and
:func:`get_timestamp_embeddings` with batches of equal-length audio at ``model.sample_rate``.

* ``sample_rate`` is 48000 (HEAR accepts 16000, 22050, 44100 or 48000; the network runs at 24 kHz and 48 kHz is an
  exact 2:1 resampling).
* Timestamp embeddings are the 512-d frame embeddings of :func:`dcasenet_hub.inference.embed` (one per 0.8 s step,
  timestamps at the step centres in milliseconds); audio longer than 60 s is processed in 60 s windows.
* Scene embeddings are their time mean (the clip embedding), 512-d.

Example:
    >>> import torch
    >>> from dcasenet_hub import hear
    >>> model = hear.load_model()                                        # doctest: +SKIP
    >>> emb, ts = hear.get_timestamp_embeddings(torch.zeros(2, 96000), model)  # doctest: +SKIP
    >>> emb.shape, ts[0, :2]                                              # doctest: +SKIP
    (torch.Size([2, 2, 512]), tensor([390., 1190.]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Rate HEAR passes audio at.
SAMPLE_RATE = 48000


class HearModel(nn.Module):
    """A :class:`~dcasenet_hub.DcaseNet` with the attributes HEAR reads.

    Attributes:
        sample_rate: 48000.
        scene_embedding_size: 512.
        timestamp_embedding_size: 512.
        model: The wrapped network.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.scene_embedding_size = int(model.embedding_dim)
        self.timestamp_embedding_size = int(model.embedding_dim)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return get_timestamp_embeddings(audio, self)


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Load DcaseNet for HEAR.

    Args:
        model_file_path: A manifest id, local folder, ``.safetensors`` or authors' ``.pt`` file; ``""`` loads the
            published ``dcasenet-v3``.
        kwargs: Passed to :func:`dcasenet_hub.from_pretrained`.
    """
    from .hub import from_pretrained

    return HearModel(from_pretrained(model_file_path or "dcasenet-v3", **kwargs))


def _embed(audio: torch.Tensor, model: HearModel) -> list[Any]:
    from .inference import embed

    if not isinstance(model, HearModel):
        raise TypeError(f"model must come from dcasenet_hub.hear.load_model(), got {type(model).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    device = next(model.model.parameters()).device
    return embed(model.model, [a for a in audio.detach().float()], sample_rate=model.sample_rate, device=device,
                 workers=0)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame embeddings and their timestamps.

    Args:
        audio: ``(n_sounds, n_samples)`` float in [-1, 1] at ``model.sample_rate``, all the same length.
        model: From :func:`load_model`.

    Returns:
        ``(embeddings (n_sounds, n_timestamps, 512) float32, timestamps (n_sounds, n_timestamps) in ms)``, on the
        audio's device.
    """
    embs = _embed(audio, model)
    frames = torch.stack([torch.from_numpy(e.frame) for e in embs]).to(audio.device)
    times = torch.stack([torch.from_numpy((e.frame_times.astype("float64") * 1000.0).astype("float32")) for e in embs]).to(audio.device)
    return frames, times


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound: the mean of its frame embeddings, ``(n_sounds, 512)`` float32."""
    embs = _embed(audio, model)
    return torch.stack([torch.from_numpy(e.clip) for e in embs]).to(audio.device)


__all__ = ["SAMPLE_RATE", "HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
