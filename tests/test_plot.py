"""dcasenet_hub.integrations.plot and `dcasenet-hub plot`: a PNG with spectrogram, event roll and scenes; helpful error without matplotlib."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main
from dcasenet_hub.inference.pipeline import predict
from dcasenet_hub.integrations.plot import MissingMatplotlibError, plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clip(seconds: float = 6.0, sr: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 800 * t) * (t % 2 < 0.5)).astype("float32")


def test_plot_api_draws_three_panels_and_saves_png(v3_model, tmp_path):
    pytest.importorskip("matplotlib")
    wav = _clip()
    pred = predict(v3_model, wav, sample_rate=22050, threshold=0.5)
    out = tmp_path / "fig.png"
    fig = plot(v3_model, wav, sample_rate=22050, prediction=pred, output=out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    _, roll, scenes = fig.axes[:3]
    assert roll.get_xlim()[1] == pytest.approx(6.0, abs=0.01)  # shared time axis over the whole clip
    assert [t.get_text() for t in roll.get_yticklabels()] == list(v3_model.config.event_labels)
    assert len(roll.patches) == len(pred.events)  # one outline per detected event
    assert len(scenes.get_lines()) == 3
    assert pred.top_scene in fig.get_suptitle()


def test_plot_command_writes_png(tmp_path, authors_checkpoint):
    pytest.importorskip("matplotlib")
    wav = tmp_path / "clip.wav"
    sf.write(wav, _clip(3.0), 22050)
    png = tmp_path / "clip.png"
    png.write_bytes(b"someone's picture")
    args = ["plot", str(wav), "-o", str(png), "--model", str(authors_checkpoint)]
    assert main(args) == 2 and png.read_bytes() == b"someone's picture"  # an existing file is kept...
    assert main([*args, "--overwrite"]) == 0  # ...unless asked
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_missing_matplotlib_says_how_to_install(v3_model, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingMatplotlibError, match=r'pip install "dcasenet-hub\[plot\]"'):
        plot(v3_model, _clip(1.0), sample_rate=22050)
    wav = tmp_path / "clip.wav"
    sf.write(wav, _clip(1.0), 22050)
    assert main(["plot", str(wav), "-o", str(tmp_path / "x.png"), "--model", "unused"]) == 2
    assert 'pip install "dcasenet-hub[plot]"' in capsys.readouterr().err


def test_plot_decodes_the_file_once_and_draws_predict_of_the_file(v3_model, tmp_path, monkeypatch):
    """One decode (the pipeline's FileReader + resampled_blocks) feeds both the spectrogram and the prediction, and
    that prediction is predict() on the file itself, bit for bit."""
    pytest.importorskip("matplotlib")
    from dcasenet_hub import audio as W
    from dcasenet_hub.audio import log_mel

    path = tmp_path / "clip.wav"
    sf.write(path, _clip(7.0), 22050)  # 22.05 kHz: the samples are resampled to 24 kHz on the way
    ref = predict(v3_model, path)
    opened = []
    real = W.FileReader

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(W, "FileReader", Counting)
    fig = plot(v3_model, path)
    assert opened == [path]
    spec, roll = fig.axes[0], fig.axes[1]
    np.testing.assert_array_equal(np.asarray(roll.images[0].get_array()), ref.event_probs.T)
    with real(path) as reader:
        samples = np.concatenate(list(W.resampled_blocks(reader, 24000)))
    np.testing.assert_array_equal(np.asarray(spec.images[0].get_array()),
                                  log_mel(samples, config=v3_model.config.frontend, normalize=False).numpy())
    assert ref.top_scene in fig.get_suptitle() and "clip.wav (7.0 s)" in fig.get_suptitle()


def test_plot_names_a_file_too_short_to_use_as_predict_does(tmp_path, authors_checkpoint, capsys):
    pytest.importorskip("matplotlib")
    wav = tmp_path / "short.wav"
    sf.write(wav, _clip(0.02, 24000), 24000)
    model = ["--model", str(authors_checkpoint)]
    assert main(["predict", str(wav), "-o", str(tmp_path / "short.json"), *model]) == 1
    said_by_predict = capsys.readouterr().err.splitlines()[-1]
    assert main(["plot", str(wav), "-o", str(tmp_path / "short.png"), *model]) == 1
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"dcasenet-hub plot: error: {wav}: too short"), line
    assert line == said_by_predict.replace("dcasenet-hub predict:", "dcasenet-hub plot:")
    assert not (tmp_path / "short.png").exists()
