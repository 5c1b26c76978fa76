"""Run an exported DcaseNet ONNX graph from numpy with onnxruntime only: no torch, no dcasenet-hub.

The log-mel front-end is computed here in numpy from the graph's own metadata (``dcasenet_hub.audio``,
``dcasenet_hub.normalisation``, ``dcasenet_hub.labels``), so the .onnx file is all a deployment needs. Needs numpy,
onnxruntime and, for other formats than 16/24/32-bit PCM WAV, soundfile.

    dcasenet-hub export --format onnx dcasenet-v3 -o dcasenet-v3.onnx
    python examples/onnx_numpy.py dcasenet-v3.onnx examples/audio/street_rumble.wav [--top 3] [--save outputs.npz]

The audio is mixed to mono, resampled to the graph's sample rate and fed whole as one input (at least 40 feature
frames, 0.8 s); outputs match the PyTorch model on the same audio within 1e-4 (tests/test_onnx_numpy.py).
"""

from __future__ import annotations

import argparse
import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def read_metadata(session: ort.InferenceSession) -> dict[str, Any]:
    """The ``dcasenet_hub.*`` metadata of the graph, JSON-decoded, keys without the prefix."""
    props = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix("dcasenet_hub."): json.loads(v) for k, v in props.items() if k.startswith("dcasenet_hub.")}


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float waveform in [-1, 1) and its sample rate."""
    try:
        import soundfile as sf
    except ImportError:  # PCM WAV with the standard library
        with wave.open(str(path), "rb") as w:
            width, channels, sr = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
        if width == 3:  # 24-bit: widen to 32-bit
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
            raw = np.concatenate([np.zeros((len(b), 1), np.uint8), b], axis=1).tobytes()
            width = 4
        if width not in (2, 4):
            raise SystemExit(f"{path}: {8 * width}-bit WAV is not supported without soundfile (pip install soundfile)")
        data = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
        data = data.reshape(-1, channels)
    else:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), int(sr)


def resample(x: np.ndarray, orig_sr: int, new_sr: int, *, width_zc: int, rolloff: float) -> np.ndarray:
    """Hann-windowed sinc resampling (torchaudio's default ``sinc_interp_hann``), polyphase, in float32."""
    if orig_sr == new_sr:
        return x
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    base = min(orig, new) * rolloff
    width = math.ceil(width_zc * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = np.clip((np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base, -width_zc, width_zc)
    window = np.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = (np.where(t == 0, 1.0, np.sin(t) / t) * window * (base / orig)).astype(np.float32)
    padded = np.pad(x.astype(np.float32), (width, width + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = (frames @ kernel.T).reshape(-1)
    return out[: math.ceil(new * len(x) / orig)]


def mel_filterbank(fe: dict[str, Any]) -> np.ndarray:
    """HTK mel triangles without normalisation, ``(n_fft // 2 + 1, n_mels)`` (torchaudio's ``melscale_fbanks``)."""
    if fe["mel_scale"] != "htk" or fe["mel_norm"] is not None:
        raise SystemExit(f"this example implements mel_scale='htk', mel_norm=None only, not {fe['mel_scale']!r}")
    def hz_to_mel(f: float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    n_freqs = fe["n_fft"] // 2 + 1
    freqs = np.linspace(0, fe["sample_rate"] // 2, n_freqs, dtype=np.float32).astype(np.float64)
    m_pts = np.linspace(hz_to_mel(fe["f_min"]), hz_to_mel(fe["f_max"]), fe["n_mels"] + 2)
    f_pts = 700.0 * (10.0 ** (m_pts.astype(np.float32).astype(np.float64) / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    return np.maximum(0.0, np.minimum(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:])).astype(np.float32)


def log_mel(wav: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Normalised log-mel ``(n_mels, frames)`` of a mono waveform at the graph's sample rate, from the metadata."""
    fe, norm = meta["frontend"], meta["normalisation"]
    if fe["window"] != "hamming" or not fe["center"]:
        raise SystemExit("this example implements the authors' centred Hamming-window STFT only")
    x = wav.astype(np.float32)
    if fe["preemphasis"]:
        x = x[1:] - np.float32(fe["preemphasis"]) * x[:-1]
    n_fft, hop, win = fe["n_fft"], fe["hop_length"], fe["win_length"]
    if len(x) <= n_fft // 2:
        raise SystemExit(f"audio too short: at least {n_fft // 2 + 2} samples at {fe['sample_rate']} Hz needed")
    x = np.pad(x, n_fft // 2, mode=fe["pad_mode"])
    window = np.zeros(n_fft, np.float32)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hamming
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** fe["power"]
    mel = (power @ mel_filterbank(fe).astype(np.float64)).T.astype(np.float32)
    mel = np.log(np.where(mel == 0, np.float32(norm["zero_floor"]), mel))
    std = np.maximum(mel.std(axis=-1, ddof=1, keepdims=True), np.float32(norm["std_floor"]))
    return ((mel - mel.mean(axis=-1, keepdims=True)) / std).astype(np.float32)


def run(onnx_path: Path, audio: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All graph outputs for one audio file (batch axis kept) and the graph's metadata."""
    for path in (onnx_path, audio):  # one line naming the file, not the decoder's "System error"
        if not path.is_file():
            raise SystemExit(f"{path}: file not found" + (" (a folder; give one file)" if path.is_dir() else ""))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    if "frontend" not in meta:
        raise SystemExit(f"{onnx_path} has no dcasenet_hub metadata: export it with `dcasenet-hub export --format "
                         "onnx` of dcasenet-hub 0.12 or later")
    fe = meta["frontend"]
    wav, sr = read_audio(audio)
    wav = resample(wav, sr, meta["sample_rate"], width_zc=fe["resample_lowpass_filter_width"],
                   rolloff=fe["resample_rolloff"])
    mel = log_mel(wav, meta)
    if mel.shape[-1] < 40:
        raise SystemExit(f"{audio}: {mel.shape[-1]} feature frames; the graph needs at least 40 (0.8 s)")
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {"mel": mel[None, None]})
    return dict(zip(names, outs)), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="graph written by `dcasenet-hub export --format onnx`")
    parser.add_argument("audio", type=Path, help="audio file (any rate; mixed to mono)")
    parser.add_argument("--top", type=int, default=3, help="labels to print per task")
    parser.add_argument("--save", type=Path, help="write every output to this .npz")
    args = parser.parse_args()
    outs, meta = run(args.onnx, args.audio)
    labels = meta["labels"]
    logits = outs["scene_logits"][0].astype(np.float64)
    scene = np.exp(logits - logits.max())
    scene /= scene.sum()
    tags = 1 / (1 + np.exp(-outs["tag_logits"][0].astype(np.float64)))
    events = outs["event_probs"][0].max(axis=0)
    for task, probs, names in (("scene", scene, labels["scene_logits"]), ("tags", tags, labels["tag_logits"]),
                               ("events (max over time)", events, labels["event_probs"])):
        best = np.argsort(-probs)[: args.top]
        print(f"{task}: " + ", ".join(f"{names[i]} {probs[i]:.3f}" for i in best))
    if args.save:
        np.savez(args.save, **outs)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
