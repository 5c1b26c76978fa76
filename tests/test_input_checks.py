"""Issue 12: nothing wrong is marked ok, nothing is lost (extreme samples, lying headers, bad options, odd inputs)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dcasenet_hub.cli import main
from dcasenet_hub.frontend import log_mel


def _noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    return (0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _index(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {Path(r["input"]).name: r for r in csv.DictReader(fh)}


def _strict_json(path: Path) -> dict:
    def no_constant(name: str) -> None:
        raise AssertionError(f"{path} holds {name}, which is not standard JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)


# ----------------------------------------------------------------------------------------------------------------
# 1. huge finite samples: finite features, finite outputs, or a failure with a reason
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e19, 1e30, 2.0**120])
def test_log_mel_of_huge_finite_signal_is_finite_and_scale_free(scale):
    x = _noise(1.0, 24000)
    ref = log_mel(x)
    loud = log_mel(x * np.float32(scale))
    assert torch.isfinite(loud).all()
    np.testing.assert_allclose(loud.numpy(), ref.numpy(), atol=2e-3)
    raw_ref, raw_loud = log_mel(x, normalize=False), log_mel(x * np.float32(scale), normalize=False)
    np.testing.assert_allclose(raw_loud.numpy(), raw_ref.numpy() + 2 * math.log(np.float32(scale)), rtol=1e-5,
                               atol=1e-3)


def test_log_mel_of_normal_audio_takes_the_unscaled_path_bit_for_bit():
    from dcasenet_hub.frontend import SAFE_PEAK, mel_power

    x = _noise(0.5, 24000) * np.float32(1000.0)  # loud but far below SAFE_PEAK
    assert np.abs(x).max() < SAFE_PEAK
    mel = mel_power(x)
    expected = mel.masked_fill(mel == 0, 1e-7).log()
    assert torch.equal(log_mel(x, normalize=False), expected)


def test_predict_huge_float_wav_gives_finite_outputs_equal_to_normal_scale(tmp_path, authors_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    x = _noise(1.5, 24000, seed=1)
    sf.write(src / "normal.wav", x, 24000, subtype="FLOAT")
    sf.write(src / "huge.wav", x * np.float32(1e19), 24000, subtype="FLOAT")
    out = tmp_path / "out"
    rc = main(["predict", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet"])
    assert rc == 0
    idx = _index(out / "index.csv")
    assert idx["huge.wav"]["status"] == "ok"
    huge, normal = _strict_json(out / "huge.json"), _strict_json(out / "normal.json")
    for k, v in normal["scene"]["probs"].items():
        assert huge["scene"]["probs"][k] == pytest.approx(v, abs=1e-3)
    scores = np.loadtxt(out / "huge.scores.tsv", delimiter="\t", skiprows=1, ndmin=2)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, np.loadtxt(out / "normal.scores.tsv", delimiter="\t", skiprows=1, ndmin=2),
                               atol=1e-3)


def test_samples_that_overflow_the_front_end_fail_the_file_with_a_reason(tmp_path, authors_checkpoint, capsys):
    x = np.full(24000, 3e38, dtype=np.float32)
    x[1::2] = -3e38  # pre-emphasis: 3e38 + 0.97 * 3e38 overflows float32
    sf.write(tmp_path / "max.wav", x, 24000, subtype="FLOAT")
    sf.write(tmp_path / "fine.wav", _noise(1.0, 24000), 24000)
    out = tmp_path / "out"
    rc = main(["embed", str(tmp_path / "max.wav"), str(tmp_path / "fine.wav"), "-o", str(out), "--model",
               str(authors_checkpoint), "--quiet"])
    assert rc == 1
    idx = _index(out / "index.csv")
    assert idx["max.wav"]["status"] == "failed" and "too large" in idx["max.wav"]["error"]
    assert "scale the audio" in idx["max.wav"]["error"]
    assert idx["fine.wav"]["status"] == "ok"
    assert not (out / "max.npz").exists()
    assert "max.wav" in capsys.readouterr().err


def test_non_finite_network_output_is_a_failure_not_ok():
    from dcasenet_hub import build_model
    from dcasenet_hub.inference import iterate

    model = build_model("v3", seed=0).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    results = list(iterate(model, [_noise(1.0, 24000)], sample_rate=24000, embeddings=True, predictions=True))
    assert results[0].error is not None and "non-finite" in str(results[0].error)
    assert results[0].embeddings is None and results[0].prediction is None


def test_writers_refuse_nan(tmp_path):
    from dcasenet_hub.inference import Embeddings, Prediction

    emb = Embeddings(frame=np.full((2, 4), np.nan, np.float32), frame_times=np.zeros(2, np.float32),
                     clip=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        emb.save(tmp_path / "e.npz")
    pred = Prediction(scene_probs=np.array([np.nan, 1.0], np.float32), tag_probs=np.zeros(1, np.float32),
                      event_probs=np.full((3, 1), np.nan, np.float32), event_times=np.arange(3) * 0.1,
                      events=[], scene_labels=("a", "b"), tag_labels=("t",), event_labels=("e",))
    with pytest.raises(ValueError):
        pred.save(tmp_path / "p.json")
    with pytest.raises(ValueError, match="NaN"):
        pred.save_scores(tmp_path / "p.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# 6. headers that cannot be right are rejected before any decoding; 7. truncated files carry a warning
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 999, 800000])
def test_implausible_sample_rate_is_rejected_in_the_decoder(tmp_path, rate):
    from dcasenet_hub.frontend import AudioLoadError, audio_info, load_audio

    path = tmp_path / f"r{rate}.wav"
    sf.write(path, _noise(0.1, 48000), rate, subtype="PCM_16")  # 96 KB; at 1 Hz the header says 13+ hours
    for fn in (audio_info, load_audio):
        with pytest.raises(AudioLoadError, match=f"sample rate of {rate} Hz, outside 1000-768000 Hz") as e:
            fn(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_one_hz_header_fails_fast_in_embed_and_the_others_are_kept(tmp_path, authors_checkpoint):
    import time

    sf.write(tmp_path / "onehz.wav", _noise(2.0, 24000), 1, subtype="PCM_16")
    sf.write(tmp_path / "fine.wav", _noise(1.0, 24000), 24000)
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = main(["embed", str(tmp_path / "onehz.wav"), str(tmp_path / "fine.wav"), "-o", str(out), "--model",
               str(authors_checkpoint), "--quiet"])
    assert time.monotonic() - t0 < 60
    assert rc == 1
    idx = _index(out / "index.csv")
    assert idx["onehz.wav"]["status"] == "failed" and "sample rate of 1 Hz" in idx["onehz.wav"]["error"]
    assert idx["fine.wav"]["status"] == "ok"


def test_header_frame_count_larger_than_the_file_is_rejected(tmp_path, monkeypatch):
    import soundfile

    from dcasenet_hub.frontend import AudioLoadError, audio_info

    path = tmp_path / "liar.wav"
    sf.write(path, _noise(0.5, 24000), 24000, subtype="PCM_16")
    real = soundfile.SoundFile

    class Liar(real):  # libsndfile clamps WAV headers itself; other containers may not
        @property
        def frames(self):
            return 10**9

    monkeypatch.setattr(soundfile, "SoundFile", Liar)
    with pytest.raises(AudioLoadError, match="declares 1000000000 frames .* but the file has only"):
        audio_info(path)


def test_truncated_wav_is_processed_with_a_warning_in_index_and_log(tmp_path, authors_checkpoint, caplog):
    full = tmp_path / "full.wav"
    sf.write(full, _noise(2.0, 24000), 24000, subtype="PCM_16")
    data = full.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="dcasenet_hub"):
        rc = main(["embed", str(tmp_path / "cut.wav"), str(full), "-o", str(out), "--model",
                   str(authors_checkpoint), "--quiet"])
    assert rc == 0
    idx = _index(out / "index.csv")
    row = idx["cut.wav"]
    assert row["status"] == "ok" and float(row["duration_s"]) == pytest.approx(1.0, abs=0.01)
    assert "header declares 96000 bytes" in row["warning"] and "truncated" in row["warning"]
    assert idx["full.wav"]["warning"] == ""
    assert any("cut.wav" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
