"""InferenceOptions: every option of embed/predict/iterate declared once, checked once, shared by the folder jobs,
the resume record and the command line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub import batch, build_model
from dcasenet_hub.batch import BatchOptions
from dcasenet_hub.errors import OptionsError
from dcasenet_hub.inference import InferenceOptions, embed, predict

BAD = [
    ("hop", 0.3), ("hop", True), ("hop", "0.1"), ("layer", "lstm"), ("pooling", "median"), ("pad_tail", "yes"),
    ("threshold", 1.5), ("threshold", float("nan")), ("threshold", -0.1), ("median_filter", -1.0),
    ("min_duration", float("inf")), ("dtype", "fp64"), ("backend", "tensorrt"), ("device", "tpu:0"),
    ("batch_size", 0), ("batch_size", 2.5), ("workers", -1), ("progress", "yes"),
    ("labels", ()), ("labels", ("dog", "")), ("labels", (3,)), ("labels", {"dog": 1}), ("exclude_labels", 7),
    ("class_thresholds", {"dog": 1.5}), ("class_thresholds", {"dog": "0.5"}), ("class_thresholds", [0.5]),
]


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_a_bad_value_names_the_option_the_value_and_what_is_allowed(name, value):
    """Catches a check lost from the dataclass (the value would reach the pipeline) or a message without the fix."""
    with pytest.raises(OptionsError) as info:
        InferenceOptions(**{name: value})
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"{name}={value!r}: ") and len(message) > len(f"{name}={value!r}: ") + 5
    with pytest.raises(OptionsError):
        InferenceOptions().replace(**{name: value})  # overrides are checked too


@pytest.mark.parametrize("cls", [InferenceOptions, BatchOptions])
def test_every_option_has_a_default_a_doc_and_what_it_allows(cls):
    """Catches an option declared without its doc or allowed values, or a default the docs would misstate."""
    described = cls.describe()
    assert tuple(described) == tuple(f.name for f in dataclasses.fields(cls))
    for name, (default, doc, allowed) in described.items():
        assert doc and allowed, name
        assert getattr(cls(), name) == default
        assert f"        {name}: {doc}; {allowed}." in cls.__doc__, name


@pytest.mark.parametrize("name, value", [("task", "train"), ("level", "frames"), ("event_formats", "csv"),
                                         ("embedding_format", "hdf5"), ("shard", "3/2")])
def test_a_bad_folder_job_value_names_the_option_the_value_and_what_is_allowed(name, value):
    """Catches a folder-job option check lost, or worded apart from the inference options'."""
    with pytest.raises(OptionsError, match=rf"^{name}={value!r}: "):
        BatchOptions(**{name: value})


def test_values_are_stored_in_one_form():
    """Catches equal options comparing (and being recorded) unequal: ``bfloat16`` vs ``bf16``, 1 vs 1.0."""
    import torch

    assert InferenceOptions(dtype="bfloat16") == InferenceOptions(dtype=torch.bfloat16) \
        == InferenceOptions(dtype="bf16")
    assert InferenceOptions(median_filter=1) == InferenceOptions(median_filter=1.0)
    assert type(InferenceOptions(batch_size=np.int64(4)).batch_size) is int


def test_keywords_win_over_options_even_when_they_are_the_default():
    """Catches overrides applied only when they differ from the dataclass default (``layer="gru"`` over a conv
    options object would be ignored) and options that are changed in place."""
    base = InferenceOptions(layer="conv", hop=0.4)
    call = {"x": "a.wav", "layer": "gru", "pooling": InferenceOptions.unset("pooling")}  # a call's locals()
    merged = InferenceOptions.merge(base, InferenceOptions.given(call), caller="embed")
    assert merged == InferenceOptions(layer="gru", hop=0.4) and base.layer == "conv"
    model = build_model("v3", seed=0).eval()
    wav = 0.1 * np.random.default_rng(0).standard_normal(24000 * 2).astype(np.float32)
    conv = embed(model, wav, sample_rate=24000, options=base, workers=0)
    assert conv.layer == "conv" and conv.hop_s == pytest.approx(0.4)
    gru = embed(model, wav, sample_rate=24000, options=base, layer="gru", workers=0)
    assert gru.layer == "gru" and gru.hop_s == pytest.approx(0.4)
    assert np.array_equal(model.embed(wav, sample_rate=24000, options=base, workers=0).frame, conv.frame)
    events = predict(model, wav, sample_rate=24000, options=InferenceOptions(threshold=0.9), threshold=0.1, workers=0)
    assert events.threshold == pytest.approx(0.1)


def test_check_outputs_refuses_what_does_not_apply_to_the_scene_layer():
    opts = InferenceOptions(layer="scene", hop=0.1)
    with pytest.raises(OptionsError, match=r"^hop=0\.1: does not apply to layer='scene'"):
        opts.check_outputs(embeddings=True, predictions=False)
    opts.check_outputs(embeddings=False, predictions=True)  # predictions do not use the layer
    with pytest.raises(OptionsError, match="^hop=0.1: does not apply"):
        BatchOptions(task="embed", layer="scene", hop=0.1)  # a folder job knows its outputs when built


def test_the_resume_record_of_default_options_is_the_one_files_already_hold():
    """Catches a change of the recorded settings' form: every output written before would be recomputed."""
    assert batch.settings_meta("embed", {"model": "m"}) == {
        "task": "embed", "model": "m", "level": "both", "hop": None, "layer": "gru", "pooling": "mean",
        "pad_tail": None, "dtype": "fp32", "backend": "torch"}
    assert batch.settings_meta("predict", {"model": "m"}, InferenceOptions(hop=0.8, median_filter=0.5)) == {
        "task": "predict", "model": "m", "hop": None, "pad_tail": None, "threshold": None, "median_filter": 0.5,
        "min_duration": None, "dtype": "fp32", "backend": "torch",
        # recorded as None when not given: files without these keys read as None (no selection), so they match
        "class_thresholds": None, "labels": None, "exclude_labels": None}
    # options that do not change a task's files are not recorded (changing them recomputes nothing)
    assert batch.settings_meta("embed", {"model": "m"}, InferenceOptions(threshold=0.2, workers=0, batch_size=3)) \
        == batch.settings_meta("embed", {"model": "m"})


@pytest.mark.parametrize("argv, line", [
    (["--threshold", "1.5"], "--threshold 1.5: must be a probability between 0 and 1"),
    (["--workers", "-1"], "--workers -1: must be a whole number >= 0"),
    (["--batch-size", "0"], "--batch-size 0: must be a whole number >= 1"),
    (["--hop", "0.3"], "--hop 0.3: must be a multiple of the 0.02 s mel hop"),
    (["--shard", "3/2"], "--shard 3/2: must look like I/N with 1 <= I <= N, e.g. 2/8"),
    (["--median-filter", "-1"], "--median-filter -1.0: must be a number of seconds >= 0"),
])
def test_the_command_line_reports_the_options_error_as_its_flag(tmp_path, capsys, argv, line):
    """Catches the command line checking values itself (its message would differ from the options') or letting
    an OptionsError out as a traceback."""
    from dcasenet_hub.cli import main

    sf.write(tmp_path / "a.wav", np.zeros(24000, dtype=np.float32), 24000)
    task = "predict" if argv[0] in ("--threshold", "--median-filter") else "embed"
    assert main([task, str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "--model", "unused", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dcasenet-hub {task}: error: {line}")
    assert not (tmp_path / "o").exists()


def test_a_folder_job_runs_where_the_model_is_or_where_cuda_is_for_a_model_it_loads(tmp_path, monkeypatch):
    """Catches the one device default meaning the CPU for a model loaded by name (the CLI's GPU default lost)."""
    from dcasenet_hub.inference import pipeline

    sf.write(tmp_path / "a.wav", np.zeros(24000, dtype=np.float32), 24000)
    seen: list = []

    def fake_iterate(model, inputs, *, options, **kwargs):
        seen.append(options.device)
        return (r for r in ())

    monkeypatch.setattr(pipeline, "iterate", fake_iterate)
    model = build_model("v1", seed=0)
    batch.run("by-name", [tmp_path / "a.wav"], tmp_path / "o1", load=lambda name: model)
    batch.run(model, [tmp_path / "a.wav"], tmp_path / "o2")
    batch.run("by-name", [tmp_path / "a.wav"], tmp_path / "o3", device="cpu", load=lambda name: model)
    assert seen == ["auto", None, "cpu"]


def test_batch_options_hold_one_inference_options():
    opts = BatchOptions(task="predict", median_filter=0.5, workers=0)
    assert opts.inference == InferenceOptions(median_filter=0.5, workers=0) and opts.median_filter == 0.5
    assert BatchOptions(task="predict", inference=opts.inference, workers=3).inference.workers == 3  # keywords win
    assert dataclasses.replace(opts, threshold=0.2).inference == InferenceOptions(median_filter=0.5, workers=0,
                                                                                  threshold=0.2)
    with pytest.raises(AttributeError):
        opts.median_filtre  # noqa: B018
    with pytest.raises(TypeError, match="unknown option"):
        BatchOptions(tresh=0.5)


def test_help_shows_each_keyword_overrides_default_from_the_one_declaration():
    """``help(embed)`` / IDEs show ``layer: str = 'gru'``, the default InferenceOptions declares (and TrainOptions
    for ``train``), while a keyword left out still takes its value from ``options``.

    Broken variant caught: every keyword override showed ``= UNSET``, so the defaults were only in
    ``InferenceOptions.describe()``.
    """
    import inspect

    from dcasenet_hub.inference.pipeline import embed, iterate, predict
    from dcasenet_hub.train import TrainOptions, train

    for fn, cls in ((embed, InferenceOptions), (predict, InferenceOptions), (iterate, InferenceOptions),
                    (train, TrainOptions)):
        declared = cls.describe()
        shown = {n: p.default for n, p in inspect.signature(fn).parameters.items() if n in declared}
        assert len(shown) >= 10, fn
        for name, default in shown.items():
            assert repr(default) == repr(declared[name][0]), (fn.__name__, name)
    model = build_model("v3", seed=0).eval()
    wav = 0.1 * np.random.default_rng(0).standard_normal(24000 * 2).astype(np.float32)
    assert embed(model, wav, sample_rate=24000, options=InferenceOptions(layer="conv")).layer == "conv"
