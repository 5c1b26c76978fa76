"""``dcasenet-hub bench``: the settings it measures, the table and JSON it writes, and which setting it names fastest.

Not for speed: the timings here are made up (passed in as ``measure=``) or come from one tiny real run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcasenet_hub.inference import bench
from dcasenet_hub.inference.bench import Measurement, Setting


def _fake_measure(seconds: dict[tuple[str, str, int], float]):
    """A ``measure`` that reports ``seconds[(task, backend, batch)]`` for the setting's clips."""

    def measure(model, setting, clips, sample_rate, min_time_s, warmup):
        audio = len(clips) * clips[0].size / sample_rate
        key = (setting.task, setting.backend, setting.batch_size)
        return Measurement(setting, audio_s=audio, seconds=seconds[key], peak_memory_mib=100.0 + setting.batch_size)

    return measure


@pytest.fixture(scope="module")
def tiny_model():
    from dcasenet_hub import build_model

    return build_model("v3", seed=0).eval()


def test_fastest_is_the_most_audio_per_second_not_the_shortest_time(tiny_model):
    # batch 1 processes one 10 s clip in 0.5 s (20 audio s/s); batch 8 four clips (40 s) in 1.0 s (40 audio s/s):
    # the shorter time is the slower setting
    settings = [Setting(t, "cpu", "fp32", "torch", b) for t in ("embed", "predict") for b in (1, 8)]
    times = {("embed", "torch", 1): 0.5, ("embed", "torch", 8): 1.0,
             ("predict", "torch", 1): 0.25, ("predict", "torch", 8): 4.0}
    report = bench.run_bench(tiny_model, settings, measure=_fake_measure(times))
    assert [m.audio_s_per_s for m in report.measurements] == [20.0, 40.0, 40.0, 10.0]
    assert report.fastest("embed").setting.batch_size == 8
    assert report.fastest("predict").setting.batch_size == 1
    data = report.to_dict()
    assert data["fastest"]["embed"]["batch_size"] == 8 and data["fastest"]["embed"]["peak_memory_mib"] == 108.0
    assert data["fastest"]["predict"]["rtf"] == pytest.approx(0.025)


def test_fastest_across_backends_and_ties_go_to_the_smaller_batch(tiny_model):
    settings = [Setting("embed", "cpu", "fp32", b, n) for b in ("torch", "onnxruntime") for n in (2, 4)]
    # 2 -> one clip (10 s), 4 -> two clips (20 s): torch 2: 10 s/s, torch 4: 20, onnxruntime 2: 20, onnxruntime 4: 19
    times = {("embed", "torch", 2): 1.0, ("embed", "torch", 4): 1.0,
             ("embed", "onnxruntime", 2): 0.5, ("embed", "onnxruntime", 4): 20 / 19}
    report = bench.run_bench(tiny_model, settings, measure=_fake_measure(times))
    best = report.fastest("embed").setting
    assert (best.backend, best.batch_size) == ("onnxruntime", 2)
    assert report.fastest("predict") is None


def test_table_names_the_fastest_setting_and_its_memory(tiny_model):
    settings = [Setting("embed", "cpu", "fp32", "torch", b) for b in (1, 8)]
    times = {("embed", "torch", 1): 1.0, ("embed", "torch", 8): 0.5}
    report = bench.run_bench(tiny_model, settings, model_name="m", measure=_fake_measure(times),
                             skipped=["cpu bf16: why"])
    text = bench.format_table(report)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| task |"))
    rows = [line for line in lines[header + 2:] if line.startswith("|")]
    assert len(rows) == 2 and rows[1].split("|")[6].strip() == "80.0"  # 4 clips x 10 s in 0.5 s
    assert rows[1].split("|")[7].strip() == "0.0125"
    assert ("Fastest embed: --device cpu --dtype fp32 --backend torch --batch-size 8 (80.0 audio s/s, RTF 0.0125, "
            "peak RSS 108 MiB)") in text
    assert "Not measured: cpu bf16: why" in text


def test_available_settings_quick_and_explicit():
    quick, _ = bench.available_settings(quick=True, devices=["cpu"])
    assert {(s.dtype, s.backend) for s in quick} == {("fp32", "torch")}
    assert sorted({s.batch_size for s in quick}) == list(bench.QUICK_BATCH_SIZES)
    assert {s.task for s in quick} == {"embed", "predict"}
    chosen, skipped = bench.available_settings(devices=["cpu"], dtypes=["fp32", "bf16"],
                                               backends=["torch", "onnxruntime"], batch_sizes=[2], tasks=["embed"])
    assert [(s.dtype, s.backend) for s in chosen] == [("fp32", "torch"), ("fp32", "onnxruntime"), ("bf16", "torch")]
    assert skipped == ["cpu bf16 onnxruntime: dtype='bf16': the onnxruntime backend runs fp32 or int8; leave dtype "
                       "unset or use backend='torch'"]  # the options' own refusal, as embed would say it
    # int8 is one setting, the quantized graph on onnxruntime, in the CPU's default list when onnxruntime is there
    int8, _ = bench.available_settings(devices=["cpu"], dtypes=["int8"], batch_sizes=[2], tasks=["embed"])
    assert [(s.dtype, s.backend) for s in int8] == [("int8", "onnxruntime")]
    default, _ = bench.available_settings(devices=["cpu"], batch_sizes=[2], tasks=["embed"])
    assert ("int8", "onnxruntime") in {(s.dtype, s.backend) for s in default}
    torch_only, _ = bench.available_settings(devices=["cpu"], backends=["torch"], batch_sizes=[2], tasks=["embed"])
    assert "int8" not in {s.dtype for s in torch_only}


def test_clips_fill_the_batch():
    assert [bench.clips_per_call(b) for b in (1, 2, 4, 8, 16)] == [1, 1, 2, 4, 8]
    assert [bench.clips_per_call(b, seconds=2.0) for b in (1, 2, 4)] == [2, 5, 10]
    a, b = bench.synthetic_clips(2, sample_rate=24000, seconds=1.0)
    assert a.shape == (24000,) and a.dtype.name == "float32" and not (a == b).all()


def test_cli_bench_writes_the_table_and_json(authors_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """One real (tiny) run through the command: every requested setting measured, finite numbers, valid JSON."""
    from dcasenet_hub.cli import main

    out = tmp_path / "b.json"
    code = main(["bench", "--model", str(authors_checkpoint), "--devices", "cpu", "--backends", "torch",
                 "--batch-sizes", "1", "--quick",
                 "--clip-seconds", "5", "-o", str(out), "-q"])
    assert code == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = data["measurements"]
    assert [(r["task"], r["batch_size"], r["audio_s"]) for r in rows] == [("embed", 1, 5.0), ("predict", 1, 5.0)]
    for r in rows:
        assert r["audio_s"] > 0 and r["seconds"] > 0
        assert r["audio_s_per_s"] == pytest.approx(r["audio_s"] / r["seconds"])
        assert r["peak_memory_mib"] > 50 and r["memory_kind"] == "peak RSS"
    best = max((r for r in rows if r["task"] == "embed"), key=lambda r: r["audio_s_per_s"])
    assert data["fastest"]["embed"] == best
    assert data["machine"]["cpu"]["cores"] >= 1 and data["model"] == str(authors_checkpoint)
    assert f"--batch-size {best['batch_size']} ({best['audio_s_per_s']:.1f} audio s/s" in text


def test_cli_bench_usage_errors(capsys) -> None:
    from dcasenet_hub.cli import main

    assert main(["bench", "--batch-sizes", "0"]) == 2
    assert "--batch-sizes must be >= 1" in capsys.readouterr().err


def test_choices_that_leave_nothing_to_measure_are_refused_before_the_model_loads(tiny_model, tmp_path, capsys):
    """onnxruntime runs fp32 or int8: asked for bf16 only, the bench would time nothing and exit 0; it is refused
    with the options' own error, on the flags that chose it."""
    from dcasenet_hub.cli import main
    from dcasenet_hub.errors import OptionsError

    with pytest.raises(OptionsError, match="^dtype='bf16': the onnxruntime backend runs fp32 or int8; leave dtype"):
        bench.available_settings(devices=["cpu"], dtypes=["bf16"], backends=["onnxruntime"])
    tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "b.json"
    code = main(["bench", "--model", str(tmp_path / "model"), "--devices", "cpu", "--backends", "onnxruntime",
                 "--dtypes", "bf16", "--batch-sizes", "1", "--quick", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert err == ["dcasenet-hub bench: error: --dtypes bf16: the onnxruntime backend runs fp32 or int8; leave dtype "
                   "unset or use backend='torch'"]


def test_quick_warms_up_on_a_whole_batch_once_per_runner(tiny_model):
    seen = []

    def measure(model, setting, clips, sample_rate, min_time_s, warmup):
        seen.append((setting.task, setting.batch_size, len(clips), min_time_s, warmup))
        return Measurement(setting, audio_s=10.0 * len(clips), seconds=1.0)

    settings = [Setting(t, "cpu", "fp32", "torch", b) for t in ("embed", "predict") for b in (1, 4)]
    bench.run_bench(tiny_model, settings, quick=True, measure=measure)
    assert seen == [("embed", 1, 1, 0.0, True), ("embed", 4, 2, 0.0, False),
                    ("predict", 1, 1, 0.0, True), ("predict", 4, 2, 0.0, False)]
    seen.clear()
    bench.run_bench(tiny_model, settings, measure=measure)
    assert [s[-2:] for s in seen] == [(bench.MIN_TIME_S, True)] * 4
