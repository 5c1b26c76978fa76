"""Features: pre-emphasis, log-mel, normalisation and time tiling (the authors' front-end, without torchaudio).

Every number comes from :class:`~dcasenet_hub.config.FrontendConfig` (docs/facts.md §5.1). The three pieces give
torchaudio's numbers (the reference fixtures were made with torchaudio 2.11):

* :func:`~dcasenet_hub.audio.resampling.resample` (in :mod:`.resampling`) is torchaudio's default ``sinc_interp_hann``
  resampler (Hann-windowed sinc, 6 zero crossings, rolloff 0.99) written as one strided convolution (polyphase).
* :func:`log_mel` is pre-emphasis 0.97, ``torch.stft`` (n_fft 2048, periodic Hamming 960, hop 480, centred with
  reflect padding), power 2, 128 HTK mel triangles without normalisation over 0-12 kHz, natural log, then per-band
  mean/std normalisation over time with the unbiased std floored at 0.001.
* Digital silence: exact zeros of the mel power are replaced by 1e-7 before the log, on every path (the authors did
  this only for tagging; scenes and events could give ``-inf``). Values that are not exactly zero are untouched, so
  features of non-silent audio equal the authors' on every path.

Example:
    >>> import numpy as np
    >>> from dcasenet_hub import log_mel
    >>> mel = log_mel(np.random.default_rng(0).standard_normal(24000).astype("float32"))
    >>> tuple(mel.shape)
    (128, 50)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from dcasenet_hub.config import FrontendConfig
from dcasenet_hub.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

_DEFAULT = FrontendConfig()
#: Largest sample magnitude :func:`log_mel` takes as is. Above it the waveform is scaled by a power of two first: the
#: mel power of a 960-sample window is at most ~1e9 * peak**2, which stays far below float32's 3.4e38 up to here.
SAFE_PEAK = 2.0**40


# ---------------------------------------------------------------------------------------------------------------
# Log-mel
# ---------------------------------------------------------------------------------------------------------------


def _hz_to_mel_htk(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: FrontendConfig = _DEFAULT) -> np.ndarray:
    """Triangular HTK mel filters ``(n_fft // 2 + 1, n_mels)`` as torchaudio's ``melscale_fbanks`` (float32)."""
    if config.mel_scale != "htk" or config.mel_norm is not None:
        raise ValueError("Only mel_scale='htk' with mel_norm=None (the authors' settings) is implemented")
    n_freqs = config.n_fft // 2 + 1
    all_freqs = np.linspace(0, config.sample_rate // 2, n_freqs, dtype=np.float32).astype(np.float64)
    m_pts = np.linspace(_hz_to_mel_htk(config.f_min), _hz_to_mel_htk(config.f_max), config.n_mels + 2)
    f_pts = _mel_to_hz_htk(m_pts.astype(np.float32).astype(np.float64))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _frontend_tensors(config: FrontendConfig, device: str, dtype: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if config.window != "hamming":
        raise ValueError(f"Unsupported window {config.window!r}; the authors used 'hamming'")
    window = torch.hamming_window(config.win_length, periodic=True, dtype=dtype, device=device)
    fb = torch.as_tensor(mel_filterbank(config), dtype=dtype, device=device)
    return window, fb


def mel_power(waveform: Any, *, config: FrontendConfig | None = None) -> torch.Tensor:
    """Pre-emphasised mel power spectrogram ``(..., n_mels, frames)`` (before the log)."""
    import torch

    cfg = config or _DEFAULT
    x = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(waveform, dtype=np.float32))
    if not x.is_floating_point():
        x = x.float()
    if x.shape[-1] < 2:
        raise InputError(f"Waveform too short for the front-end: {x.shape[-1]} samples")
    if cfg.preemphasis:
        x = preemphasis(x, cfg.preemphasis)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    window, fb = _frontend_tensors(cfg, str(flat.device), flat.dtype)
    if cfg.center and cfg.pad_mode == "reflect" and flat.shape[-1] <= cfg.n_fft // 2:
        raise InputError(
            f"Waveform of {shape[-1] + 1} samples is too short for reflect padding ({cfg.n_fft // 2 + 2} needed); "
            "tile short inputs first"
        )
    spec = torch.stft(flat, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
                      center=cfg.center, pad_mode=cfg.pad_mode, normalized=False, onesided=True, return_complex=True)
    if cfg.power == 2:
        # |z|^2 as re^2 + im^2: no square root (faster than abs().pow(2); equal up to float rounding)
        power = spec.real.square() + spec.imag.square()
    else:
        power = spec.abs().pow(cfg.power)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
    return mel.reshape(*shape[:-1], cfg.n_mels, mel.shape[-1])


def normalize(logmel: torch.Tensor, *, std_floor: float = 0.001) -> torch.Tensor:
    """Per-utterance, per-band normalisation over time: ``(x - mean) / max(std_unbiased, std_floor)``."""
    mean = logmel.mean(dim=-1, keepdim=True)
    std = logmel.std(dim=-1, keepdim=True).clamp_min(std_floor)
    return (logmel - mean) / std


def log_mel(waveform: Any, *, config: FrontendConfig | None = None, normalize: bool = True) -> torch.Tensor:
    """Log-mel features of a waveform at ``config.sample_rate`` (24 kHz): ``(..., samples) -> (..., 128, frames)``.

    Frames = ``1 + (samples - 1) // 480`` (pre-emphasis drops one sample, centred STFT).

    Any finite waveform gives finite features: input with peaks above :data:`SAFE_PEAK` (2**40, far outside the
    usual [-1, 1]) is scaled by an exact power of two before the power spectrum, which would otherwise overflow
    float32, and the scale is added back after the log. Normalised features do not depend on the scale.

    Args:
        waveform: numpy array or torch tensor, any leading batch/channel axes.
        config: Front-end settings (default: the authors').
        normalize: Apply the per-utterance mean/std normalisation (per band over the whole input).

    Returns:
        A float tensor on the input's device.

    Raises:
        InputError: the waveform contains NaN or infinite samples, or is too short (both are ValueErrors).

    Example:
        >>> import torch
        >>> log_mel(torch.zeros(2, 48000)).isfinite().all().item()   # digital silence stays finite
        True
    """
    import torch

    cfg = config or _DEFAULT
    x = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(waveform, dtype=np.float32))
    if not x.is_floating_point():
        x = x.float()
    peak = float(x.abs().amax()) if x.numel() else 0.0
    if not math.isfinite(peak):
        raise InputError("Waveform contains NaN or infinite samples")
    # Loud input (far beyond [-1, 1]): scale by an exact power of two so the power cannot overflow float32, and add
    # the scale back in the log domain. Audio with peaks up to SAFE_PEAK takes the unscaled path, bit for bit.
    shift = max(0, math.ceil(math.log2(peak / SAFE_PEAK))) if peak > SAFE_PEAK else 0
    with _one_intra_op_thread():
        mel = mel_power(x * 2.0**-shift if shift else x, config=cfg)
    silent = mel == 0
    mel = mel.masked_fill(silent, cfg.zero_floor).log()
    if shift:
        mel = torch.where(silent, mel, mel + shift * cfg.power * math.log(2.0))
    if normalize:
        mel = _normalize(mel, std_floor=cfg.std_floor)
    return mel


_normalize = normalize


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread of the calling thread, then restore its setting.

    The mel projection's matrix product rounds differently with 1 and 2 threads (log-mel differences up to 1.8e-6):
    on one thread the features of an input are the same whatever torch's thread count, so ``embed`` gives the same
    numbers with any ``workers`` (decode workers run torch on one thread). It costs little (docs/performance.md).
    Reading the count first fixes this thread's own; setting it back also restores torch's process-wide value, which
    threads that have not run a parallel op yet start from.
    """
    import torch

    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def preemphasis(waveform: Any, coefficient: float) -> Any:
    """``y[n] = x[n+1] - c * x[n]`` along the last axis (length ``N - 1``), numpy or torch, as the authors.

    :func:`mel_power` applies it to a whole signal, :func:`preemphasised_blocks` to a stream of blocks; both give
    the same numbers as this function.

    Example:
        >>> import numpy as np
        >>> preemphasis(np.array([1.0, 2.0, 3.0], dtype=np.float32), 0.5).tolist()
        [1.5, 2.0]
    """
    if isinstance(waveform, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow (peaks near 3e38) is reported by features()
            return (waveform[..., 1:] - np.float32(coefficient) * waveform[..., :-1]).astype(np.float32, copy=False)
    return waveform[..., 1:] - coefficient * waveform[..., :-1]


def tile_frames(mel: Any, min_frames: int) -> Any:
    """Repeat ``mel`` (``(..., frames)``, torch) in time by doubling until it has at least ``min_frames`` frames.

    This is how the authors' tagging evaluation lengthened short clips (on the log-mel, before normalisation); the
    pipeline, fine-tuning and training all tile through this function.

    Example:
        >>> import torch
        >>> tile_frames(torch.arange(3.0), 7).tolist()
        [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    """
    import torch

    if mel.shape[-1] == 0:
        raise InputError("Cannot tile an input with no frames")
    while mel.shape[-1] < min_frames:
        mel = torch.cat([mel, mel], dim=-1)
    return mel


def preemphasised_blocks(blocks: Iterator[np.ndarray], coefficient: float) -> Iterator[np.ndarray]:
    """``y[n] = x[n+1] - c * x[n]`` over the concatenation of ``blocks`` (length ``N - 1``), block by block."""
    prev: np.ndarray | None = None
    for block in blocks:
        if block.size == 0:
            continue
        if not coefficient:
            yield block
            continue
        x = block if prev is None else np.concatenate([prev, block])
        if x.size >= 2:
            yield preemphasis(x, coefficient)
        prev = x[-1:]


def features(samples: np.ndarray, *, frontend: FrontendConfig, min_frames: int,
             device: Any = None) -> tuple[Any, int]:
    """Normalised log-mel ``(1, n_mels, F')`` of already pre-emphasised samples and the untiled frame count ``F``.

    The one feature step of a window: inference, fine-tuning and the trainer's evaluation call it. Inputs with
    ``F < min_frames`` are tiled in time by doubling the log-mel (as the authors' tagging evaluation did, before
    normalisation) until they reach ``min_frames``.

    Args:
        samples: Pre-emphasised float32 samples at ``frontend.sample_rate``.
        frontend: Front-end settings (the pre-emphasis coefficient is not applied again).
        min_frames: Tile shorter inputs up to this many frames (the network needs 40).
        device: Compute the STFT and mel on this device (default CPU), e.g. the model's GPU.

    Example:
        >>> from dcasenet_hub.config import FrontendConfig
        >>> mel, frames = features(np.zeros(12000, np.float32), frontend=FrontendConfig(), min_frames=40)
        >>> tuple(mel.shape), frames
        ((1, 128, 52), 26)

    Raises:
        InputError: the samples are not finite (a loud input overflowed float32 in resampling or pre-emphasis).
    """
    import torch

    if not np.isfinite(samples).all():
        # finite input whose resampled or pre-emphasised values exceed float32 (peaks near 3e38)
        raise InputError("sample values too large: resampling or pre-emphasis overflows float32 (peaks near 1e38); "
                         "scale the audio to [-1, 1]")
    no_pre = dataclasses.replace(frontend, preemphasis=0.0)
    x = torch.from_numpy(samples)
    if device is not None:
        x = x.to(device, non_blocking=True)
    mel = log_mel(x, config=no_pre, normalize=False)
    frames = int(mel.shape[-1])
    return normalize(tile_frames(mel, min_frames), std_floor=frontend.std_floor).unsqueeze(0), frames
