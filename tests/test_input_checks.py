"""Nothing wrong is marked ok, nothing is lost (extreme samples, lying headers, bad options, odd inputs)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dcasenet_hub.audio import log_mel
from dcasenet_hub.cli import main


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
    from dcasenet_hub.audio import SAFE_PEAK, mel_power

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
    from dcasenet_hub.inference.pipeline import iterate

    model = build_model("v3", seed=0).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    results = list(iterate(model, [_noise(1.0, 24000)], sample_rate=24000, embeddings=True, predictions=True))
    assert results[0].error is not None and "non-finite" in str(results[0].error)
    assert results[0].embeddings is None and results[0].prediction is None


def test_writers_refuse_nan(tmp_path):
    from dcasenet_hub.inference.pipeline import Embeddings, Prediction

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
    from dcasenet_hub.audio import AudioLoadError, audio_info, load_audio

    path = tmp_path / f"r{rate}.wav"
    sf.write(path, _noise(0.1, 48000), rate, subtype="PCM_16")  # 96 KB; at 1 Hz the header says 13+ hours
    for fn in (audio_info, load_audio):
        with pytest.raises(AudioLoadError, match=f"sample rate of {rate} Hz, outside 1000-768000 Hz") as e:
            fn(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("rate", [10, 800000, float("nan"), 16000.5, True, "24000", [24000, 16000]])
def test_an_arrays_sample_rate_obeys_the_rule_of_file_headers(v3_model, rate):
    """An array's sample_rate is a whole number of Hz in the range a file header may declare; anything else is one
    InputError naming the input (a list of rates also says how to give each array its own).

    Broken variants caught: 10 Hz made 3 s of samples into 2 hours of audio (9000 frames); NaN and a list of rates
    were a bare ValueError / TypeError from int() that named neither the input nor the rule.
    """
    from dcasenet_hub.errors import InputError
    from dcasenet_hub.inference.pipeline import embed

    x = _noise(0.5, 24000)
    with pytest.raises(InputError, match=r"^<array 0>: sample_rate must be a whole number of Hz from 1000 to 768000"
                       ) as e:
        embed(v3_model, x, sample_rate=rate)
    assert ("sampling_rate" in str(e.value)) == isinstance(rate, list)
    with pytest.raises(InputError, match="sample_rate must be a whole number"):
        embed(v3_model, {"array": x, "sampling_rate": rate})
    assert embed(v3_model, x, sample_rate=24000.0).duration_s == pytest.approx(0.5)
    for whole in (np.array(24000), torch.tensor(24000), np.int64(24000)):  # 0-d arrays and tensors are numbers
        assert embed(v3_model, x, sample_rate=whole).duration_s == pytest.approx(0.5)


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

    from dcasenet_hub.audio import AudioLoadError, audio_info

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
    # a resumed run skips both (complete) and the skipped truncated file keeps its warning in the new index row
    assert main(["embed", str(tmp_path / "cut.wav"), str(full), "-o", str(out), "--model",
                 str(authors_checkpoint), "--quiet"]) == 0
    again = _index(out / "index.csv")
    assert again["cut.wav"]["status"] == "ok" and again["cut.wav"]["warning"] == row["warning"]
    assert again["full.wav"]["status"] == "ok" and again["full.wav"]["warning"] == ""


# ----------------------------------------------------------------------------------------------------------------
# 13. devices, 17. option ranges, 18. wrong kinds of paths: one line, exit 2, before any work
# ----------------------------------------------------------------------------------------------------------------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu"])
def test_unusable_device_is_a_one_line_usage_error_before_any_work(tmp_path, authors_checkpoint, capsys,
                                                                   monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch, whatever this machine has
    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    out = tmp_path / "out"
    rc = main(["embed", str(tmp_path / "a.wav"), "-o", str(out), "--model", str(authors_checkpoint), "--quiet",
               "--device", device])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--device {device}: " in line and ("use cpu" in line or "use auto, cpu" in line)
    assert not out.exists()  # no index with pending rows


@pytest.mark.parametrize("option,value,expected", [
    ("--threshold", "2", "--threshold 2: must be a probability between 0 and 1"),
    ("--threshold", "nan", "--threshold nan: must be a probability between 0 and 1"),
    ("--threshold", "-1", "--threshold -1: must be a probability between 0 and 1"),
    ("--median-filter", "-1", "--median-filter -1.0: must be a number of seconds >= 0"),
    ("--median-filter", "inf", "--median-filter inf: must be a number of seconds >= 0"),
    ("--min-duration", "-5", "--min-duration -5.0: must be a number of seconds >= 0"),
])
@pytest.mark.parametrize("command", ["predict", "plot"])
def test_out_of_range_event_options_are_usage_errors(tmp_path, authors_checkpoint, capsys, option, value,
                                                     expected, command):
    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    target = ["-o", str(tmp_path / "out")] if command == "predict" else ["-o", str(tmp_path / "a.png")]
    rc = main([command, str(tmp_path / "a.wav"), *target, "--model", str(authors_checkpoint), option, value])
    assert rc == 2
    assert expected in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "a.png").exists()


def test_output_dir_that_is_a_file_is_a_usage_error(tmp_path, authors_checkpoint, capsys):
    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    rc = main(["embed", str(tmp_path / "a.wav"), "-o", str(notes), "--model", str(authors_checkpoint)])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is an existing file; OUTDIR must be a folder" in line and "Errno" not in line
    assert notes.read_text() == "keep me\n"


def test_plot_of_a_folder_says_it_is_a_folder(tmp_path, authors_checkpoint, capsys):
    rc = main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png"), "--model", str(authors_checkpoint)])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is a folder; plot draws one audio file" in line and "not found" not in line


# ----------------------------------------------------------------------------------------------------------------
# 15. model failures have their own exit code (3) in every command; 18. a non-checkpoint --model says what is expected
# ----------------------------------------------------------------------------------------------------------------


def test_model_that_is_not_a_checkpoint_exits_3_with_what_is_expected(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    for cmd in (["embed", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o")],
                ["predict", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o")],
                ["plot", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.png")],
                ["export", "-o", str(tmp_path / "m.onnx"), "--no-check"]):
        args = [*cmd, "--model", str(notes)] if cmd[0] != "export" else [*cmd[:1], str(notes), *cmd[1:]]
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 3, (cmd[0], err)
        line = _one_error_line(err)
        assert "model could not be fetched or loaded" in line and "is not a model checkpoint" in line
        assert "Expected a manifest id" in line and ".safetensors" in line


def test_convert_and_push_of_a_non_model_exit_3(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert main(["convert", str(notes), "-o", str(tmp_path / "m")]) == 3
    assert "model could not be fetched or loaded" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "folder").mkdir()
    assert main(["push", str(tmp_path / "folder"), "--repo-id", "org/name"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert "model could not be fetched or loaded" in line and "has no model.safetensors" in line


def test_convert_refuses_what_is_not_an_authors_checkpoint_naming_the_fix(tmp_path, authors_checkpoint, capsys):
    """A converted model (its folder, or its .safetensors, which torch.load also reads) loads as it is: convert
    refuses it instead of writing a model with the default labels and a provenance of an authors' file; a missing
    file and an -o that is an existing file are named with the fix.

    Broken variants caught: convert of a .safetensors wrote default labels, no trained tasks and "authors'-format
    checkpoint"; a folder was "No checkpoint file out1"; -o afile was "[Errno 17] File exists".
    """
    model = tmp_path / "model"
    assert main(["convert", str(authors_checkpoint), "-o", str(model), "-q"]) == 0
    for source, said in ((model / "model.safetensors", "is a safetensors file, already converted: load it as it is"),
                         (model, "is a folder: load it as it is"),
                         (tmp_path / "nowhere.pt", "no such file; convert reads an authors' .pt checkpoint")):
        assert main(["convert", str(source), "-o", str(tmp_path / "again")]) == 3, source
        assert f"{source}{'' if source.exists() else ':'} " in (line := _one_error_line(capsys.readouterr().err))
        assert said in line
    assert not (tmp_path / "again").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["convert", str(authors_checkpoint), "-o", str(tmp_path / "afile")]) == 2
    assert "afile is an existing file; the output must be a folder" in _one_error_line(capsys.readouterr().err)


def test_offline_model_exits_3_and_names_the_model_path_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    rc = main(["embed", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "--model", "dcasenet-v3", "--quiet"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "model could not be fetched or loaded" in err and "--model PATH" in err and "Traceback" not in err


def test_every_help_documents_exit_code_3(capsys):
    from dcasenet_hub.cli import build_parser

    for cmd in ("embed", "predict", "plot"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "3  model could not be fetched or loaded" in capsys.readouterr().out
    assert "3 model could not be fetched or loaded" in build_parser().format_help()


# ----------------------------------------------------------------------------------------------------------------
# 19. logging: the package's logger only; -v / -q before or after the sub-command
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def restore_logging():
    import logging

    root, pkg = logging.getLogger(), logging.getLogger("dcasenet_hub")
    saved = (root.level, list(root.handlers), pkg.level, list(pkg.handlers))
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    pkg.setLevel(saved[2])
    pkg.handlers[:] = saved[3]


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_and_quiet_set_the_package_logger_only_before_or_after_the_command(restore_logging, where):
    import logging

    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    for flag, level in (("-v", logging.DEBUG), ("-q", logging.WARNING), (None, logging.INFO)):
        args = ["list"] if flag is None else ([flag, "list"] if where == "before" else ["list", flag])
        assert main(args) == 0
        assert logging.getLogger("dcasenet_hub").getEffectiveLevel() == level, (flag, where)
        assert root.level == root_level and root.handlers == root_handlers
        assert logging.getLogger("matplotlib").getEffectiveLevel() == root_level


def test_predict_accepts_verbose_after_the_subcommand(tmp_path, authors_checkpoint, restore_logging, capsys):
    import logging

    sf.write(tmp_path / "a.wav", _noise(0.5, 24000), 24000)
    rc = main(["predict", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "--model", str(authors_checkpoint),
               "-q", "-v", "--threshold", "0.5"])
    assert rc == 0
    assert logging.getLogger("dcasenet_hub").getEffectiveLevel() == logging.DEBUG


# ----------------------------------------------------------------------------------------------------------------
# 16. soundfile.read's (frames, channels) layout
# ----------------------------------------------------------------------------------------------------------------


def test_embed_accepts_soundfile_read_layout(tmp_path, v3_model):
    from dcasenet_hub.inference.pipeline import embed

    stereo = np.stack([_noise(1.2, 22050, seed=3), _noise(1.2, 22050, seed=4)], axis=1)  # (frames, 2)
    sf.write(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    x, sr = sf.read(tmp_path / "s.wav", dtype="float32")
    assert x.shape == (26460, 2)
    from_frames_channels = embed(v3_model, x, sample_rate=sr)
    from_file = embed(v3_model, tmp_path / "s.wav")
    from_channels_samples = embed(v3_model, x.T, sample_rate=sr)
    np.testing.assert_allclose(from_frames_channels.frame, from_file.frame, atol=1e-6)
    np.testing.assert_allclose(from_frames_channels.frame, from_channels_samples.frame, atol=1e-6)


def test_ambiguous_2d_waveform_that_is_too_short_names_the_shape_and_the_fix(v3_model):
    from dcasenet_hub.inference.pipeline import embed

    x = np.zeros((3000, 100), np.float32)  # 100 "samples" of 3000 channels, or 3000 frames of 100 channels?
    with pytest.raises(ValueError, match=r"too short .*shape \(3000, 100\).*pass x\.T"):
        embed(v3_model, x, sample_rate=24000)


@pytest.mark.parametrize("kwargs", [{"threshold": 2.0}, {"threshold": float("nan")}, {"threshold": -1.0},
                                    {"median_filter": -1.0}, {"min_duration": -5.0}, {"min_duration": float("inf")}])
def test_api_rejects_out_of_range_event_options(v3_model, kwargs):
    from dcasenet_hub.inference.pipeline import predict

    with pytest.raises(ValueError, match="between 0 and 1|seconds >= 0"):
        predict(v3_model, _noise(0.5, 24000), sample_rate=24000, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# 10. the same file twice is processed once; a symlink loop is one failed input, not an aborted run
# ----------------------------------------------------------------------------------------------------------------


def test_same_file_given_twice_is_processed_once(tmp_path, authors_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(0.5, 24000), 24000)
    listing = tmp_path / "files.txt"
    listing.write_text("in/a.wav\n")
    out = tmp_path / "out"
    rc = main(["embed", str(src / "a.wav"), str(src / "a.wav"), str(listing), "-o", str(out), "--model",
               str(authors_checkpoint)])
    assert rc == 0
    with open(out / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [("a.wav", "ok")]
    assert "1 input: 1 done" in capsys.readouterr().err


def test_symlink_loop_argument_is_one_failed_input(tmp_path, authors_checkpoint, capsys):
    sf.write(tmp_path / "good.wav", _noise(0.5, 24000), 24000)
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.wav"
    dangling.symlink_to(tmp_path / "missing.wav")
    out = tmp_path / "out"
    rc = main(["embed", str(tmp_path / "good.wav"), str(loop), str(dangling), "-o", str(out), "--model",
               str(authors_checkpoint), "--quiet"])
    assert rc == 1
    idx = _index(out / "index.csv")
    assert idx["good.wav"]["status"] == "ok" and (out / "good.npz").is_file()
    for name in ("loop.wav", "gone.wav"):
        assert idx[name]["status"] == "failed" and "symlink loop or a broken symlink" in idx[name]["error"]
    err = capsys.readouterr().err
    assert "2 failed" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# 9. merged events.csv is real CSV; index.csv and events.csv cover every run into the output folder
# ----------------------------------------------------------------------------------------------------------------


def test_merged_events_csv_keeps_a_line_separator_in_a_file_name(tmp_path, authors_checkpoint):
    name = "a\u2028b.wav"
    sf.write(tmp_path / name, _noise(1.0, 24000), 24000)
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / name), "-o", str(out), "--model", str(authors_checkpoint), "--quiet",
               "--threshold", "0"])  # every frame active: events for sure
    assert rc == 0
    with open(out / "events.csv", encoding="utf-8", newline="") as fh:
        merged = list(csv.DictReader(fh))
    with open(out / "a\u2028b.events.csv", encoding="utf-8", newline="") as fh:
        own = list(csv.DictReader(fh))
    assert own and merged == own
    assert {r["filename"] for r in merged} == {name}


def test_index_and_events_are_cumulative_over_runs(tmp_path, authors_checkpoint):
    for n in ("a", "b"):
        sf.write(tmp_path / f"{n}.wav", _noise(1.0, 24000, seed=ord(n)), 24000)
    (tmp_path / "bad.wav").write_text("not audio")
    out = tmp_path / "out"
    common = ["-o", str(out), "--model", str(authors_checkpoint), "--quiet", "--threshold", "0"]
    assert main(["predict", str(tmp_path / "a.wav"), str(tmp_path / "bad.wav"), *common]) == 1
    assert main(["predict", str(tmp_path / "b.wav"), *common]) == 0
    idx = _index(out / "index.csv")
    assert {k: v["status"] for k, v in idx.items()} == {"a.wav": "ok", "bad.wav": "failed", "b.wav": "ok"}
    with open(out / "events.csv", newline="") as fh:
        assert {r["filename"] for r in csv.DictReader(fh)} == {"a.wav", "b.wav"}
    # rerun of a: its row is replaced, not duplicated
    assert main(["predict", str(tmp_path / "a.wav"), *common]) == 0
    with open(out / "index.csv", newline="") as fh:
        names = [Path(r["input"]).name for r in csv.DictReader(fh)]
    assert sorted(names) == ["a.wav", "b.wav", "bad.wav"]
    assert _index(out / "index.csv")["a.wav"]["status"] == "ok"  # complete (skipped by the rerun)


# ----------------------------------------------------------------------------------------------------------------
# 4. shards are chosen by output path, so a collision is seen by one process
# ----------------------------------------------------------------------------------------------------------------


def test_shard_by_output_path_sees_collisions(tmp_path, authors_checkpoint):
    import zlib

    # a stem whose two input names hash to different shards (what hashing the input path did)
    stem = next(f"x{i}" for i in range(100)
                if zlib.crc32(f"x{i}.wav".encode()) % 2 != zlib.crc32(f"x{i}.flac".encode()) % 2)
    sf.write(tmp_path / f"{stem}.wav", _noise(0.5, 24000, seed=1), 24000)
    sf.write(tmp_path / f"{stem}.flac", _noise(0.5, 24000, seed=2), 24000)
    out = tmp_path / "out"
    statuses = {}
    for shard in ("1/2", "2/2"):
        main(["embed", str(tmp_path / f"{stem}.wav"), str(tmp_path / f"{stem}.flac"), "-o", str(out), "--model",
              str(authors_checkpoint), "--quiet", "--shard", shard])
        index = out / "index.csv"  # one index for every shard
        if index.exists():
            statuses.update({k: v for k, v in _index(index).items()})
    assert sorted(statuses) == [f"{stem}.flac", f"{stem}.wav"]
    assert statuses[f"{stem}.wav"]["status"] == "ok"
    assert statuses[f"{stem}.flac"]["status"] == "failed" and "would overwrite" in statuses[f"{stem}.flac"]["error"]
    with np.load(out / f"{stem}.npz") as z:
        assert json.loads(str(z["meta"]))["source"].endswith(".wav")


# ----------------------------------------------------------------------------------------------------------------
# 12. torch.load(weights_only=True) is only safe against crafted files from torch 2.6
# ----------------------------------------------------------------------------------------------------------------


def _setup_cfg():
    import configparser

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    return cfg


def test_torch_floor_is_2_6():
    reqs = [r.strip() for r in _setup_cfg()["options"]["install_requires"].splitlines() if r.strip()]
    torch_reqs = [r for r in reqs if r.startswith("torch")]
    assert torch_reqs == ["torch>=2.6"], torch_reqs


# ----------------------------------------------------------------------------------------------------------------
# 25. license file and metadata; the wheel check script
# ----------------------------------------------------------------------------------------------------------------


def test_mit_license_file_and_spdx_metadata():
    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "dcasenet-hub contributors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
    meta = _setup_cfg()["metadata"]
    assert meta["license"].strip() == "MIT" and meta["license_files"].strip() == "LICENSE"
    assert "License ::" not in meta["classifiers"]  # deprecated next to an SPDX expression
    weights_doc = (root / "docs" / "weights.md").read_text(encoding="utf-8")
    assert "Jungjee/DcaseNet" in weights_doc and "Copyright (c) 2020 jjung_stop1" in weights_doc


def test_wheel_check_script_builds_installs_and_runs_the_commands():
    script = Path(__file__).resolve().parents[1] / ".ci" / "wheel_check.sh"
    text = script.read_text(encoding="utf-8")
    assert script.stat().st_mode & 0o111, "not executable"
    assert "set -euo pipefail" in text
    for needle in ("pip wheel -q --no-deps -w", "venv", "torch==2.13.0", "dcasenet-hub list",
                   "dcasenet-hub train --list-recipes"):
        assert needle in text, needle
    assert "-e " not in text.replace("set -euo", "")  # never an editable install


def _bad_input(kind: str, folder: Path) -> Path:
    """One input that cannot be processed, of the kind named."""
    suffix = {"cut flac": "flac", "text named .mp3": "mp3"}.get(kind, "wav")
    path = folder / f"{kind.replace(' ', '_').replace('.', '')}.{suffix}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind in ("text", "text named .mp3"):
        path.write_text("not audio\n" * 10)
    elif kind == "cut flac":
        sf.write(path, _noise(2.0, 24000), 24000)
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "NaN samples":
        x = _noise(1.0, 24000)
        x[100] = np.nan
        sf.write(path, x, 24000, subtype="FLOAT")
    elif kind == "past float32":
        sf.write(path, np.sin(np.arange(24000) / 5) * 1e300, 24000, subtype="DOUBLE")
    elif kind == "peaks past float32 after resampling":  # finite samples; the 44.1 -> 24 kHz resampling overflows
        noise = np.random.default_rng(0).standard_normal(44100) * 3e38
        sf.write(path, noise.clip(-3.4e38, 3.4e38).astype(np.float32), 44100, subtype="FLOAT")
    elif kind in ("too short", "unreadable"):
        sf.write(path, _noise(0.05 if kind == "too short" else 1.0, 24000), 24000)
    return path


BAD_INPUTS = {  # the problem, then the fix
    "empty": ("is empty (0 bytes)", "export it again"),
    "text": ("it exists but could not be decoded as audio (Format not recognised.)", "convert it to WAV or FLAC"),
    # libsndfile's MP3 decoder says "File does not exist or is not a regular file" of a file it cannot decode
    "text named .mp3": ("it exists but could not be decoded as audio", "check that it really is audio"),
    "cut flac": ("decoding failed at frame 0 (flac decoder lost sync.)", "repair or export it again"),
    "NaN samples": ("contains NaN or infinite samples", "replace them"),
    "past float32": ("beyond the float32 range (|x| up to 1e+300)", "scale the audio to [-1, 1]"),
    "peaks past float32 after resampling": ("sample values too large", "scale the audio to [-1, 1]"),
    "too short": ("too short (50.00 ms)", "pad it with silence"),
    "unreadable": ("permission denied", "chmod a+r"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_a_bad_input_is_one_line_naming_the_file_the_problem_and_the_fix(kind, tmp_path, authors_checkpoint,
                                                                          monkeypatch, capsys, recwarn):
    import builtins

    import dcasenet_hub.audio.io as audio_io

    bad, good = _bad_input(kind, tmp_path), tmp_path / "good.wav"
    sf.write(good, _noise(1.0, 24000), 24000)
    if kind == "unreadable":  # as a user without read permission sees it (these tests may run as root)
        def no_read(file, *args, **kwargs):
            if Path(file) == bad:
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(audio_io, "open", no_read, raising=False)
    rc = main(["embed", str(bad), str(good), "-o", str(tmp_path / "out"), "--model", str(authors_checkpoint), "-q"])
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("  failed:")]
    assert rc == 1 and len(failed) == 1, err  # one line for the bad input; the good one was processed
    problem, fix = BAD_INPUTS[kind]
    assert str(bad) in failed[0] and problem in failed[0] and fix in failed[0], failed[0]
    assert "does not exist" not in failed[0], failed[0]  # every bad input here exists
    assert "Traceback" not in err and "b'" not in err, err
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


def test_ray_batch_checks_option_values_when_built_and_names_each_failed_row(authors_checkpoint):
    """DcaseNetBatch (the Ray map_batches callable, called here without Ray) refuses an option value when it is
    built, on the driver, and each waveform row's error names that row.

    Broken variants caught: hop=0.05, batch_size=0 or an unknown class threshold built fine and failed at every
    actor's first batch; rows 1 and 2 both said "<array 0>" (each row is computed alone).
    """
    from dcasenet_hub.errors import OptionsError
    from dcasenet_hub.integrations.ray import DcaseNetBatch

    for kwargs, said in ((dict(options={"hop": 0.05}), "hop=0.05"), (dict(batch_size=0), "batch_size=0"),
                         (dict(task="predict", options={"class_thresholds": {"dgo": 0.5}}), "did you mean 'dog'")):
        with pytest.raises(OptionsError, match=said):
            DcaseNetBatch(str(authors_checkpoint), **kwargs)
    batch = DcaseNetBatch(str(authors_checkpoint))
    x = _noise(1.0, 24000)
    out = batch({"audio": np.array([x, x[:100], np.full(24000, np.nan, np.float32)], dtype=object),
                 "sample_rate": np.array([24000, 24000, 24000])}).to_pydict()
    assert out["ok"] == [True, False, False]
    assert out["error"][1].startswith("<row 1>: too short") and out["error"][2].startswith("<row 2>: contains NaN")
    assert len(out["clip_embedding"][0]) > 0 and out["clip_embedding"][1:] == [[], []]
