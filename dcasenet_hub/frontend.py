"""The authors' front-end: audio file -> 24 kHz waveform -> normalised log-mel, without torchaudio.

Every number comes from :class:`~dcasenet_hub.config.FrontendConfig` (docs/facts.md §5.1). The three pieces give
torchaudio's numbers (the reference fixtures were made with torchaudio 2.11):

* :func:`resample` is torchaudio's default ``sinc_interp_hann`` resampler (Hann-windowed sinc, 6 zero crossings,
  rolloff 0.99) written as one strided convolution (polyphase).
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

import functools
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import FrontendConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

_DEFAULT = FrontendConfig()
#: Largest sample magnitude :func:`log_mel` takes as is. Above it the waveform is scaled by a power of two first: the
#: mel power of a 960-sample window is at most ~1e9 * peak**2, which stays far below float32's 3.4e38 up to here.
SAFE_PEAK = 2.0**40


class AudioLoadError(ValueError):
    """An audio file could not be used; the message names the file and the problem.

    Attributes:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of an audio file without decoding it.

    Raises:
        AudioLoadError: missing, unreadable or not audio.
    """
    with open_audio(path) as f:
        return int(f.samplerate), int(f.channels), int(f.frames)


def open_audio(path: str | Path) -> Any:
    """Open an audio file for block reading (a ``soundfile.SoundFile``), with errors that name the file.

    The header is checked before anything is decoded: the sample rate must lie in
    [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] and, for uncompressed formats, the declared frames must fit in
    the file. A header that declares more data than the file holds (a truncated file) is read as the shorter file it
    is; :func:`header_warning` describes it.

    Raises:
        AudioLoadError: missing, a directory, empty, not a readable audio file, or a header that cannot be right.
    """
    import soundfile as sf

    path = Path(path)
    _check_file(path)
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise AudioLoadError(path, f"not a readable audio file ({_short(exc)})") from None
    try:
        _check_header(path, f)
    except AudioLoadError:
        f.close()
        raise
    return f


#: Sample rates outside this range are taken for a corrupt header (a 1 Hz header makes 96 KB last 13 hours).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
#: Bytes per sample of the uncompressed subtypes (compressed formats have no fixed size and are not checked).
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                  "FLOAT": 4, "DOUBLE": 8}
#: Containers that store those subtypes as is (FLAC also reports "PCM_16" but compresses).
_UNCOMPRESSED_FORMATS = frozenset({"WAV", "WAVEX", "AIFF", "AU", "RAW", "W64", "RF64", "CAF", "IRCAM", "NIST"})
_SHOULD_BE = re.compile(r"^\s*(?:data|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _check_header(path: Path, f: Any) -> None:
    sr = int(f.samplerate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioLoadError(path, f"header declares a sample rate of {sr} Hz, outside {MIN_SAMPLE_RATE}-"
                                   f"{MAX_SAMPLE_RATE} Hz: the header is corrupt; "
                                   "re-encode the file with its real rate")
    width = _SUBTYPE_BYTES.get(str(f.subtype)) if str(f.format) in _UNCOMPRESSED_FORMATS else None
    size = path.stat().st_size
    if width is not None and int(f.frames) * int(f.channels) * width > size:
        raise AudioLoadError(path, f"header declares {int(f.frames)} frames ({int(f.frames) / sr:.1f} s) but the "
                                   f"file has only {size} bytes: the header is corrupt; re-encode or repair the file")


def header_warning(f: Any) -> str:
    """A one-line warning when the open file's header declares more audio data than the file holds, else ``""``.

    libsndfile reads such a (truncated) file as the shorter file it is; the warning says how much is missing.

    Args:
        f: An open ``soundfile.SoundFile`` (from :func:`open_audio`).
    """
    try:
        info = str(f.extra_info)
    except (AttributeError, RuntimeError):  # pragma: no cover - extra_info is a libsndfile log
        return ""
    m = _SHOULD_BE.search(info)
    if m is None:
        return ""
    declared, present = int(m.group(1)), int(m.group(2))
    if declared <= present:
        return ""
    seconds = int(f.frames) / int(f.samplerate)
    declared_s = seconds * declared / present if present else float("inf")
    return (f"header declares {declared} bytes of audio but the file holds {present}: processed as {seconds:.3f} s "
            f"instead of {declared_s:.3f} s (truncated file?)")


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = 24000,
    mono: bool = True,
    start: int = 0,
    frames: int = -1,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 in [-1, 1), optionally mixed to mono and resampled.

    Any format libsndfile reads (wav, flac, ogg, mp3, ...), 8-bit to 32-bit float, any channel count and rate.

    Args:
        path: The file.
        sample_rate: Resample to this rate; ``None`` keeps the file's rate.
        mono: Average the channels (shape ``(samples,)``); ``False`` keeps them (shape ``(channels, samples)``).
        start: First frame to read (at the file's rate).
        frames: Number of frames to read (-1: to the end).

    Returns:
        ``(waveform, sample_rate)``.

    Raises:
        AudioLoadError: the file is missing, unreadable, not audio, empty or contains NaN/inf samples.

    Example:
        >>> wav, sr = load_audio("street.wav")  # doctest: +SKIP
    """
    import soundfile as sf

    path = Path(path)
    with open_audio(path) as f:
        sr = f.samplerate
        warning = header_warning(f)
        if warning:
            logger.warning("%s: %s", path, warning)
        try:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise AudioLoadError(path, f"decoding failed ({_short(exc)})") from None
    if data.size == 0:
        raise AudioLoadError(path, "contains no audio samples (empty file)")
    if not np.isfinite(data).all():
        raise AudioLoadError(path, "contains NaN or infinite samples")
    wav = data.mean(axis=1) if mono else np.ascontiguousarray(data.T)
    wav = wav.astype(np.float32, copy=False)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def _check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise AudioLoadError(path, "is a symlink loop or a broken symlink; fix or remove the link")
    if not path.exists():
        raise AudioLoadError(path, "file not found")
    if path.is_dir():
        raise AudioLoadError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "is empty (0 bytes)")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, width_zc: int, rolloff: float) -> tuple[np.ndarray, int]:
    """Polyphase windowed-sinc kernel ``(new, 2*width + orig)`` in float64 and the half width (torchaudio's design)."""
    base = min(orig, new) * rolloff
    width = math.ceil(width_zc * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -width_zc, width_zc)
    window = np.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    return sinc * window * (base / orig), width


def resample(waveform: Any, orig_sr: int, target_sr: int, *, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> Any:
    """Resample along the last axis with torchaudio's default windowed-sinc filter.

    Output length is ``ceil(n * target_sr / orig_sr)``, as torchaudio. Works on numpy arrays (returns numpy) and
    torch tensors (returns a tensor on the same device and dtype).

    Args:
        waveform: ``(..., samples)`` array or tensor.
        orig_sr: Its sample rate.
        target_sr: Wanted sample rate.
        lowpass_filter_width: Zero crossings of the sinc on each side.
        rolloff: Cut-off relative to the lower Nyquist frequency.

    Example:
        >>> import numpy as np
        >>> resample(np.zeros(44100, dtype="float32"), 44100, 24000).shape
        (24000,)
    """
    import torch
    import torch.nn.functional as F

    if orig_sr <= 0 or target_sr <= 0 or int(orig_sr) != orig_sr or int(target_sr) != target_sr:
        raise ValueError(f"Sample rates must be positive integers, got {orig_sr} -> {target_sr}")
    is_numpy = not isinstance(waveform, torch.Tensor)
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if is_numpy else waveform)
    if orig_sr == target_sr:
        return waveform
    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    kernel_np, width = _sinc_kernel(orig, new, lowpass_filter_width, float(rolloff))
    dtype = x.dtype if x.is_floating_point() else torch.float32
    kernel = torch.as_tensor(kernel_np, dtype=dtype, device=x.device)[:, None, :]
    shape = x.shape
    length = shape[-1]
    flat = x.reshape(-1, length).to(dtype)
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None, :], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    out = out[..., :target_length].reshape(*shape[:-1], -1)
    return out.numpy() if is_numpy else out


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
        raise ValueError(f"Waveform too short for the front-end: {x.shape[-1]} samples")
    if cfg.preemphasis:
        x = x[..., 1:] - cfg.preemphasis * x[..., :-1]
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    window, fb = _frontend_tensors(cfg, str(flat.device), flat.dtype)
    if cfg.center and cfg.pad_mode == "reflect" and flat.shape[-1] <= cfg.n_fft // 2:
        raise ValueError(
            f"Waveform of {shape[-1] + 1} samples is too short for reflect padding ({cfg.n_fft // 2 + 2} needed); "
            "tile short inputs first"
        )
    spec = torch.stft(flat, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
                      center=cfg.center, pad_mode=cfg.pad_mode, normalized=False, onesided=True, return_complex=True)
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
        ValueError: the waveform contains NaN or infinite samples, or is too short.

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
        raise ValueError("Waveform contains NaN or infinite samples")
    # Loud input (far beyond [-1, 1]): scale by an exact power of two so the power cannot overflow float32, and add
    # the scale back in the log domain. Audio with peaks up to SAFE_PEAK takes the unscaled path, bit for bit.
    shift = max(0, math.ceil(math.log2(peak / SAFE_PEAK))) if peak > SAFE_PEAK else 0
    mel = mel_power(x * 2.0**-shift if shift else x, config=cfg)
    silent = mel == 0
    mel = mel.masked_fill(silent, cfg.zero_floor).log()
    if shift:
        mel = torch.where(silent, mel, mel + shift * cfg.power * math.log(2.0))
    if normalize:
        mel = _normalize(mel, std_floor=cfg.std_floor)
    return mel


_normalize = normalize

__all__ = [
    "AudioLoadError",
    "audio_info",
    "load_audio",
    "log_mel",
    "mel_filterbank",
    "mel_power",
    "normalize",
    "header_warning",
    "open_audio",
    "resample",
]
