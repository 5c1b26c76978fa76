"""Resampling: torchaudio's default windowed-sinc resampler, whole-signal or in aligned chunks (identical output)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.audio.io import Reader

#: Input chunk (seconds) for resampling; signals up to this length are resampled in one piece.
RESAMPLE_CHUNK_S = 60.0
#: Minimum input context (samples at the input rate) on each side of a resampling chunk.
RESAMPLE_CONTEXT = 256


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



def resampled_length(num_frames: int, orig_sr: int, target_sr: int) -> int:
    """Length of the whole-signal resampled output (torchaudio's ``ceil(n * target / orig)``)."""
    if orig_sr == target_sr:
        return num_frames
    return math.ceil(num_frames * target_sr / orig_sr)


def resampled_blocks(reader: Reader, target_sr: int, *, chunk_s: float | None = None,
                     device: Any = None) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of the whole signal resampled to ``target_sr``.

    Each chunk starts on an input sample whose output position is an integer (a multiple of ``orig / gcd``) and is
    resampled with at least :data:`RESAMPLE_CONTEXT` input samples of context on each side, then cut; the
    windowed-sinc filter spans fewer samples than the context, so every output sample sees exactly the input samples
    it sees when the whole signal is resampled at once (differences are float rounding only).

    With ``device`` (a GPU, where the model runs) each chunk is resampled there in float64 and returned as float32
    numpy: the GPU's float64 convolution involves no TF32, so the blocks equal the CPU's float32 ones to float32
    rounding.
    """
    chunk_s = RESAMPLE_CHUNK_S if chunk_s is None else chunk_s
    orig = reader.sample_rate
    n = reader.num_frames
    if orig == target_sr:
        step = max(1, int(chunk_s * orig))
        for start in range(0, n, step):
            yield reader.read(start, min(n, start + step))
        return
    g = math.gcd(orig, target_sr)
    o, t = orig // g, target_sr // g
    chunk = max(1, round(chunk_s * orig / o)) * o
    if n <= chunk:
        yield _resample_on(reader.read(0, n), orig, target_sr, device)
        return
    ctx = math.ceil(RESAMPLE_CONTEXT / o) * o
    total_out = resampled_length(n, orig, target_sr)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        lo, hi = max(0, start - ctx), min(n, stop + ctx)
        out = _resample_on(reader.read(lo, hi), orig, target_sr, device)
        skip = (start - lo) // o * t
        count = (stop - start) // o * t if stop < n else total_out - start // o * t
        yield out[skip:skip + count]


def _resample_on(samples: np.ndarray, orig_sr: int, target_sr: int, device: Any) -> np.ndarray:
    """:func:`resample` as float32 numpy, on the CPU or (``device`` given) in float64 on that device."""
    if device is None:
        return np.asarray(resample(samples, orig_sr, target_sr), dtype=np.float32)
    import torch

    # float64 on the device: cuDNN would run a float32 convolution in TF32 (~1e-3 relative error) by default, and its
    # switch (torch.backends.cudnn.allow_tf32) is process-wide, so it cannot be turned off for this worker alone
    x = torch.from_numpy(np.ascontiguousarray(samples)).to(device, dtype=torch.float64)
    return resample(x, orig_sr, target_sr).to(dtype=torch.float32).cpu().numpy()
