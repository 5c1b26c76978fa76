"""Synthesise a few short example clips into examples/audio/ (no downloads; deterministic).

They are made to exercise the pipeline (different rates, channel counts, bit depths and lengths), not to be
realistic recordings:

    street_rumble.wav     10 s, 44.1 kHz stereo 16-bit: low rumble with a vehicle-like pass-by
    park_chirps.wav        8 s, 48 kHz mono 24-bit: bird-like frequency sweeps over soft wind noise
    alarm_beeps.flac       6 s, 24 kHz mono: an alternating two-tone beeper
    knocks.wav             5 s, 16 kHz mono 16-bit: decaying impulsive knocks
    piano_notes.wav        7 s, 22.05 kHz mono float: harmonic notes with decay
    short_blip.wav       0.4 s, 8 kHz mono 8-bit: shorter than the network's 0.8 s minimum (tiled)

Usage:
    python examples/make_example_audio.py [-o examples/audio]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf


def _lowpass(x: np.ndarray, alpha: float) -> np.ndarray:
    y = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):  # one-pole filter; clips are short
        acc += alpha * (v - acc)
        y[i] = acc
    return y


def street(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = 10 * sr
    t = np.arange(n) / sr
    rumble = np.cumsum(rng.standard_normal(n))
    rumble = rumble - np.convolve(rumble, np.ones(sr // 20) / (sr // 20), mode="same")
    rumble /= np.abs(rumble).max()
    env = np.exp(-((t - 6.0) / 1.5) ** 2)
    engine = np.sin(2 * np.pi * (90 + 15 * np.tanh(6.0 - t)) * t) + 0.5 * np.sin(2 * np.pi * 180 * t)
    hiss = rng.standard_normal(n) * env
    mono = 0.25 * rumble + 0.35 * env * engine + 0.15 * hiss
    pan = np.clip((t - 3.0) / 6.0, 0, 1)
    return np.stack([mono * (1 - 0.6 * pan), mono * (0.4 + 0.6 * pan)], axis=1)


def park(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = 8 * sr
    t = np.arange(n) / sr
    x = 0.03 * _lowpass(rng.standard_normal(n), 0.05) * 10
    for start in rng.uniform(0.2, 7.5, size=14):
        dur = rng.uniform(0.08, 0.25)
        idx = (t >= start) & (t < start + dur)
        tau = t[idx] - start
        f0, f1 = rng.uniform(2500, 4500), rng.uniform(3000, 6000)
        phase = 2 * np.pi * (f0 * tau + (f1 - f0) * tau**2 / (2 * dur))
        x[idx] += 0.3 * np.sin(phase) * np.sin(np.pi * tau / dur)
    return x


def alarm(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = 6 * sr
    t = np.arange(n) / sr
    f = np.where((t * 2).astype(int) % 2 == 0, 1000.0, 1500.0)
    gate = ((t * 4) % 1 < 0.6).astype(float)
    return 0.4 * np.sin(2 * np.pi * np.cumsum(f) / sr) * gate + 0.01 * rng.standard_normal(n)


def knocks(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = 5 * sr
    x = 0.005 * rng.standard_normal(n)
    for start in (0.5, 0.8, 1.1, 2.6, 2.9, 3.2, 4.3):
        i = int(start * sr)
        m = int(0.15 * sr)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.015 * sr))
        x[i:i + m] += 0.6 * _lowpass(burst, 0.3)
    return x


def piano(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = 7 * sr
    t = np.arange(n) / sr
    x = np.zeros(n)
    for k, midi in enumerate((60, 64, 67, 72, 67, 64, 60)):
        f = 440 * 2 ** ((midi - 69) / 12)
        on = k * 0.9 + 0.2
        tau = np.clip(t - on, 0, None)
        env = (t >= on) * np.exp(-tau / 0.6)
        x += 0.2 * env * sum(np.sin(2 * np.pi * h * f * tau) / h for h in range(1, 6))
    return x + 0.002 * rng.standard_normal(n)


def blip(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.4 * sr)
    t = np.arange(n) / sr
    return 0.5 * np.sin(2 * np.pi * 700 * t) * np.hanning(n) + 0.01 * rng.standard_normal(n)


CLIPS = (
    ("street_rumble.wav", street, 44100, "PCM_16"),
    ("park_chirps.wav", park, 48000, "PCM_24"),
    ("alarm_beeps.flac", alarm, 24000, "PCM_16"),
    ("knocks.wav", knocks, 16000, "PCM_16"),
    ("piano_notes.wav", piano, 22050, "FLOAT"),
    ("short_blip.wav", blip, 8000, "PCM_U8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path,
                        default=Path(__file__).resolve().parent / "audio")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, make, sr, subtype) in enumerate(CLIPS):
        x = make(sr, np.random.default_rng(i))
        x = 0.9 * x / max(1.0, float(np.abs(x).max()) / 0.9)
        sf.write(args.out / name, x.astype(np.float32), sr, subtype=subtype)
        print(f"wrote {args.out / name} ({len(x) / sr:.1f} s, {sr} Hz, {subtype})")


if __name__ == "__main__":
    main()
