"""Frame timestamps on one regular grid at every input length: ``--hop``, ``embed(hop=...)`` and the HEAR module.

The sweeps replace the network by a stub of the same output shapes (the timestamps do not depend on what the network
computes); a few lengths go through the real network end to end. The fixture weights are test weights, not
pretrained ones.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dcasenet_hub import hear
from dcasenet_hub.config import TIME_REDUCTION, WindowConfig
from dcasenet_hub.inference import pipeline
from dcasenet_hub.inference.pipeline import embed

SR = 24000


class _StubNetwork(torch.nn.Module):
    """Outputs of the network's shapes at no cost: one 4-d frame embedding per 40 mel frames (any number of mel
    bands)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, mel: torch.Tensor, tasks: tuple[str, ...] = (), **_: object) -> SimpleNamespace:
        steps = mel.shape[-1] // TIME_REDUCTION
        return SimpleNamespace(scene_logits=None, tag_logits=None, event_probs=None, scene_embeddings=None,
                               conv_embeddings=None, frame_embeddings=torch.zeros(mel.shape[0], steps, 4),
                               frame_times=torch.arange(steps) * 0.8 + 0.39)


def _frames(n: int, hop_length: int) -> int:
    return 1 + n // hop_length  # the centred STFT's frame count


def _fake_features(samples: np.ndarray, *, frontend, min_frames: int, device=None) -> tuple[torch.Tensor, int]:
    frames = tiled = _frames(samples.shape[-1], frontend.hop_length)
    while tiled < min_frames:  # tiled by doubling, as the real features are
        tiled *= 2
    return torch.zeros(1, 1, tiled), frames  # one mel band: the shapes that matter are the frame counts


def _fake_log_mel(x: torch.Tensor, *, config, normalize: bool = True) -> torch.Tensor:
    return torch.rand(1, _frames(x.shape[-1], config.hop_length))


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network and the log-mel replaced by stubs of the same shapes: the timestamps depend on lengths only."""
    import dcasenet_hub.audio

    net = _StubNetwork()
    monkeypatch.setattr(pipeline, "inference_runner", lambda model, **_: net)
    monkeypatch.setattr(dcasenet_hub.audio, "features", _fake_features)
    monkeypatch.setattr(dcasenet_hub.audio, "log_mel", _fake_log_mel)


def _assert_regular(times_s: np.ndarray, hop_s: float, what: str) -> None:
    """Every time within 1 ms of 0.39 s + k * hop, k = 0, 1, 2, ... without a gap."""
    k = np.arange(times_s.size)
    off = np.abs(times_s.astype(np.float64) - (0.39 + k * hop_s))
    assert off.max() < 1e-3, f"{what}: frame {int(off.argmax())} is {off.max() * 1000:.1f} ms off the {hop_s} s grid"


@pytest.mark.parametrize("hop", [0.04, 0.1])
def test_frame_times_are_regular_at_every_length_around_the_60_s_window(v3_model, stub, hop: float) -> None:
    """Before: 60.3 s at a 40 ms hop ended 59830, 59870, 60149.98 ms (one 280 ms step), 60.3 s and 60.5 s at
    --hop 0.1 too: the last (short, tiled) event window's frame sat at its middle, after a gap."""
    lengths = np.round(np.arange(59.9, 61.0 + 1e-9, 0.01), 2)
    waves = [np.zeros(int(round(s * SR)), np.float32) for s in lengths]
    results = embed(v3_model, waves, sample_rate=SR, hop=hop, workers=0)
    for seconds, r in zip(lengths, results):
        _assert_regular(r.frame_times, hop, f"{seconds} s at hop {hop}")
        assert r.frame.shape[0] == r.frame_times.shape[0]
        assert seconds - 0.8 < r.frame_times[-1] < seconds + hop  # to the last 0.8 s step, not past the input


def test_frame_times_are_regular_for_a_long_input(v3_model, stub) -> None:
    """Many 60 s windows and a short tail (185.35 s), at 40 ms and 100 ms."""
    wave = np.zeros(int(185.35 * SR), np.float32)
    for hop in (0.04, 0.1):
        r = embed(v3_model, wave, sample_rate=SR, hop=hop, workers=0)
        _assert_regular(r.frame_times, hop, f"185.35 s at hop {hop}")
        assert 185.35 - 0.8 < r.frame_times[-1] < 185.35 + hop


def _small_windows(v3_model):
    model = copy.copy(v3_model)
    model.config = v3_model.config.replace(windows=WindowConfig(event_window_s=4.0))  # a window boundary at 4 s
    return model


@pytest.mark.parametrize(("seconds", "hop"), [(4.3, 0.1), (8.3, 0.8)])
def test_embed_with_the_network_keeps_the_grid_past_a_short_last_window(v3_model, seconds: float, hop: float) -> None:
    model = _small_windows(v3_model)
    wave = np.random.default_rng(2).standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
    r = embed(model, wave, sample_rate=SR, hop=hop, workers=0)
    _assert_regular(r.frame_times, hop, f"{seconds} s at hop {hop}")
    assert np.isfinite(r.frame).all() and r.frame.shape == (r.frame_times.size, 512)
    # the frames of the 0.8 s grid are the network's 0.8 s steps (the finer grid only adds frames between them)
    coarse = embed(model, wave, sample_rate=SR, workers=0)
    step = int(round(0.8 / hop))
    n = min(coarse.frame.shape[0], (r.frame.shape[0] + step - 1) // step)
    np.testing.assert_allclose(r.frame[::step][:n], coarse.frame[:n], atol=1e-5, rtol=0)


def test_hear_timestamps_at_48_khz_past_a_short_last_window(v3_model) -> None:
    """The HEAR module's 40 ms grid on 4.3 s at 48 kHz (a 4 s window and a 0.3 s tail, as 60.3 s with 60 s
    windows)."""
    wrapped = hear.HearModel(_small_windows(v3_model), hop=0.04)
    audio = torch.rand(1, int(4.3 * 48000), generator=torch.Generator().manual_seed(3)) * 0.2 - 0.1
    emb, ts = hear.get_timestamp_embeddings(audio, wrapped)
    _assert_regular(ts[0].numpy() / 1000.0, 0.04, "HEAR 4.3 s at 48 kHz")
    assert emb.shape[:2] == ts.shape
