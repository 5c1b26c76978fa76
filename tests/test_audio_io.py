"""One decoder: whole-file reading (``load_audio``) and block-by-block streaming (``FileReader``, as the pipeline
reads long files) give identical samples, for every format and channel layout tried."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.audio import FileReader, load_audio, resample, resampled_blocks
from dcasenet_hub.errors import AudioLoadError


def _write(path, channels: int, sr: int, subtype: str, n: int = 30011):
    rng = np.random.default_rng(channels * 7 + sr)
    data = (rng.standard_normal((n, channels)) * 0.2).clip(-0.99, 0.99).astype(np.float32)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


CASES = [("wav", 1, 44100, "PCM_16"), ("wav", 2, 48000, "PCM_24"), ("flac", 3, 22050, "PCM_16"),
         ("wav", 2, 24000, "FLOAT"), ("ogg", 2, 32000, "VORBIS")]


@pytest.mark.parametrize(("ext", "channels", "sr", "subtype"), CASES, ids=[f"{c[0]}-{c[1]}ch-{c[3]}" for c in CASES])
def test_streamed_blocks_equal_whole_file(tmp_path, ext, channels, sr, subtype):
    path = _write(tmp_path / f"a.{ext}", channels, sr, subtype)
    whole, got_sr = load_audio(path, sample_rate=None)
    assert got_sr == sr and whole.dtype == np.float32 and whole.ndim == 1
    with FileReader(path) as reader:
        n = reader.num_frames
        bounds = [0, 1, 4097, 4098, 17000, n]  # odd block sizes, a 1-sample block
        streamed = np.concatenate([reader.read(a, b) for a, b in itertools.pairwise(bounds)])
    np.testing.assert_array_equal(streamed, whole)  # bit for bit, not within a tolerance
    # keeping the channels: the same decoder, the same samples
    multi, _ = load_audio(path, sample_rate=None, mono=False)
    assert multi.shape == (channels, n)
    with FileReader(path, mono=False) as reader:
        np.testing.assert_array_equal(np.concatenate([reader.read(0, 5000), reader.read(5000, n)], axis=1), multi)
    # a part of the file: start/frames read the same samples as a block of the stream
    part, _ = load_audio(path, sample_rate=None, start=1234, frames=5000)
    np.testing.assert_array_equal(part, whole[1234:6234])


def test_streamed_resampling_equals_whole_file_resampling(tmp_path, monkeypatch):
    """What the pipeline streams (blocks resampled in aligned chunks) is what load_audio gives whole."""
    from dcasenet_hub.audio import resampling

    path = _write(tmp_path / "b.wav", 2, 44100, "PCM_16", n=44100 * 3 + 17)
    monkeypatch.setattr(resampling, "RESAMPLE_CHUNK_S", 0.7)  # several chunks in a 3 s file
    with FileReader(path) as reader:
        streamed = np.concatenate(list(resampled_blocks(reader, 24000)))
    whole, sr = load_audio(path, sample_rate=24000)
    assert sr == 24000 and streamed.shape == whole.shape
    np.testing.assert_array_equal(streamed, whole)  # chunks with context: identical, not merely close
    np.testing.assert_array_equal(whole, resample(load_audio(path, sample_rate=None)[0], 44100, 24000))


def test_whole_file_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioLoadError, match="empty.wav"):
        load_audio(empty)
    bad = tmp_path / "nan.wav"
    sf.write(str(bad), np.array([[0.0], [np.nan], [0.1]] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="NaN"):
        load_audio(bad)
    with FileReader(bad) as reader, pytest.raises(AudioLoadError, match="NaN"):
        reader.read(0, reader.num_frames)
