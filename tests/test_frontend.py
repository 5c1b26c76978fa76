"""Front-end parity with the authors' features (torchaudio 2.11 fixtures) and audio loading."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dcasenet_hub import AudioLoadError, FrontendConfig, load_audio, log_mel, resample
from dcasenet_hub.audio import mel_power, normalize


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return np.load(fixtures_dir / "frontend_reference.npz")


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - est).astype(np.float64) ** 2)))


def test_log_mel_matches_authors_scene_path(ref):
    feats = log_mel(ref["wave_24k"]).numpy()
    assert feats.shape == ref["features_asc_path"].shape == (128, 150)
    assert np.abs(feats - ref["features_asc_path"]).max() < 1e-4


def test_log_mel_matches_authors_tag_path_with_silence(ref):
    feats = log_mel(ref["wave_24k_with_silence"]).numpy()
    assert np.isfinite(feats).all()
    assert np.abs(feats - ref["features_tag_path"]).max() < 1e-4


def test_resampler_snr_against_torchaudio(ref):
    out = resample(ref["wave_44k"], 44100, 24000)
    assert out.shape == ref["resampled_24k"].shape
    assert _snr_db(ref["resampled_24k"], out) >= 60.0


def test_resampler_torch_and_numpy_agree_and_lengths():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 44101)).astype(np.float32)
    y_np = resample(x, 44100, 24000)
    y_t = resample(torch.from_numpy(x), 44100, 24000)
    assert y_np.shape == (2, int(np.ceil(44101 * 24000 / 44100)))
    np.testing.assert_allclose(y_np, y_t.numpy(), atol=1e-6)
    assert resample(x, 24000, 24000) is x
    # a pure tone below the cut-off keeps its amplitude through 48k -> 24k -> 48k
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    back = resample(resample(tone, 48000, 24000), 24000, 48000)
    assert _snr_db(tone[2000:-2000], back[2000:-2000]) > 40


def test_resampler_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive integers"):
        resample(np.zeros(10, np.float32), 0, 24000)


@pytest.mark.parametrize("n", [24000, 2 * 24000 + 17])
def test_digital_silence_is_finite_everywhere(n):
    feats = log_mel(torch.zeros(3, n))
    assert torch.isfinite(feats).all()
    # silence gives exact zeros in the mel power: they become log(1e-7) before normalisation
    raw = log_mel(torch.zeros(n), normalize=False)
    assert torch.allclose(raw, torch.full_like(raw, float(np.log(np.float32(1e-7)))))


def test_zero_rule_only_touches_exact_zeros(ref):
    wav = torch.from_numpy(ref["wave_24k"])
    power = mel_power(wav)
    assert (power > 0).all()
    expected = normalize(power.log())
    torch.testing.assert_close(log_mel(wav), expected, rtol=0, atol=1e-5)


def test_frame_count_and_batch_axes():
    cfg = FrontendConfig()
    # the authors' 5 s crop is 120000 samples of the pre-emphasised signal = 120001 raw samples -> 251 frames
    x = torch.randn(2, 3, 120001)
    feats = log_mel(x)
    assert feats.shape == (2, 3, 128, cfg.num_frames(120001)) == (2, 3, 128, 251)
    assert cfg.num_frames(240000) == 500
    torch.testing.assert_close(feats[1, 2], log_mel(x[1, 2]))


def test_std_floor_applies():
    const = torch.full((1, 24000), 0.5)
    const[0, ::2] = -0.5  # a pure Nyquist tone: after normalisation every band is finite
    assert torch.isfinite(log_mel(const)).all()


SUBTYPES = [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
            ("FLAC", "PCM_16"), ("OGG", "VORBIS")]


@pytest.mark.parametrize("fmt,subtype", SUBTYPES)
def test_load_audio_formats_rates_channels(tmp_path, fmt, subtype):
    sr, channels = 44100, 2
    t = np.arange(sr // 2) / sr
    data = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 880 * t)], axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    wav, out_sr = load_audio(path)
    assert out_sr == 24000 and wav.dtype == np.float32 and wav.ndim == 1
    assert wav.shape[0] == int(np.ceil(len(t) * 24000 / sr))
    multi, sr2 = load_audio(path, sample_rate=None, mono=False)
    assert sr2 == sr and multi.shape == (channels, len(t))
    tol = {"PCM_U8": 2e-2, "VORBIS": 5e-2}.get(subtype, 1e-3)
    assert np.abs(multi[0] - data[:, 0]).max() < tol
    np.testing.assert_allclose(load_audio(path, sample_rate=None)[0], multi.mean(axis=0), atol=1e-6)


def test_load_audio_mp3(tmp_path):
    """A real (modulated 440 Hz) signal through an MP3 file comes back in place and close to what was written
    (soundfile >= 0.12 wheels bundle libsndfile 1.1+ with MP3 read and write)."""
    path = tmp_path / "x.mp3"
    t = np.arange(48000) / 24000
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    sf.write(path, x[:, None], 24000, format="MP3")
    wav, sr = load_audio(path)
    assert sr == 24000 and wav.shape == x.shape

    def rel_rms(a: np.ndarray, b: np.ndarray) -> float:  # away from the codec's edges
        a, b = a[2000:-2000], b[2000:-2000]
        return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))

    # measured 0.021 (lossy codec); one sample of misalignment already gives 0.117
    assert rel_rms(wav, x) < 0.05
    assert rel_rms(wav, np.roll(x, 1)) > 0.05


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty"), (b"this is not audio at all" * 10, "not a readable audio file")],
)
def test_load_audio_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioLoadError, match=reason) as info:
        load_audio(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_load_audio_missing_nan_and_zero_frames(tmp_path):
    with pytest.raises(AudioLoadError, match="file not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioLoadError, match="directory"):
        load_audio(tmp_path)
    nan = tmp_path / "nan.wav"
    data = np.zeros(1000, np.float32)
    data[10] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="NaN"):
        load_audio(nan)
    hdr_only = tmp_path / "noframes.wav"
    sf.write(hdr_only, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioLoadError, match="no audio samples"):
        load_audio(hdr_only)


def test_log_mel_does_not_depend_on_torch_thread_count():
    """Broken variant caught: the mel projection run on all of torch's threads (its matrix product rounds
    differently with 1 and 2 threads, up to 1.8e-6), which made ``embed`` differ with ``workers=0`` and ``workers=2``."""
    x = torch.from_numpy((np.random.default_rng(7).standard_normal(24000 * 10) * 0.1).astype(np.float32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = log_mel(x)
        torch.set_num_threads(2)
        two = log_mel(x)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
