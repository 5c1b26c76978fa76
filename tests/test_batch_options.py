"""The folder jobs' options: one :class:`BatchOptions` dataclass, the old keyword calls unchanged, overrides on top."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub import batch
from dcasenet_hub.batch import BatchOptions
from dcasenet_hub.batch.options import merge_batch_options
from dcasenet_hub.inference import InferenceOptions

# the keywords of run()/prepare(), with their defaults: every keyword call must mean the same (progress None is
# "bars when stderr is a terminal", device None "the model's device; a model loaded by name goes to CUDA if any")
OLD_KEYWORDS = {
    "task": "embed", "level": "both", "hop": None, "layer": "gru", "pooling": "mean", "threshold": None,
    "median_filter": None, "min_duration": None, "pad_tail": False, "device": None, "dtype": None, "backend": "torch",
    "batch_size": 8, "workers": 2, "shard": None, "overwrite": False, "progress": None,
    "event_formats": ("dcase",), "embedding_format": "npz",  # added later; their defaults write what old calls wrote
    "labels": None, "exclude_labels": None, "class_thresholds": None,  # added later: None keeps every class
    "feature_device": "cpu", "stream_threshold_s": 120.0,  # added later: the values of the old module switches
}
# a non-default value for every option (valid together)
CHANGED = {
    "task": "predict", "level": "clip", "hop": 0.4, "layer": "conv", "pooling": "mean+max", "threshold": 0.4,
    "median_filter": 0.5, "min_duration": 0.3, "pad_tail": True, "device": "cpu", "dtype": "bf16",
    "backend": "torch", "batch_size": 3, "workers": 0, "shard": "1/2", "overwrite": True, "progress": True,
    "event_formats": ("dcase", "raven"), "embedding_format": "parquet",
    "labels": ("dog", "engine"), "exclude_labels": ("park",), "class_thresholds": {"dog": 0.6},
    "feature_device": "model", "stream_threshold_s": 60.0,
}
# a model object prepare() accepts without loading weights: it only reads config.model_id
MODEL = SimpleNamespace(config=SimpleNamespace(model_id="test-model"))


def _folder(tmp_path: Path, n: int = 6, seconds: float = 1.0) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(root / f"f{i}.wav", 0.1 * rng.standard_normal(int(seconds * 24000)), 24000)
    return root


def _plan_view(plan: batch.Plan) -> dict:
    return {"items": [(i.rel.as_posix(), i.output) for i in plan.items], "index": plan.index_path,
            "meta": plan.meta, "options": plan.options,
            "task": plan.task, "level": plan.level, "overwrite": plan.overwrite, "device": plan.device}


def test_fields_and_defaults_are_the_old_keywords():
    """Catches a renamed option or a changed default (an old keyword call would fail or silently mean another job),
    and an inference option whose default differs between the folder jobs and embed/predict."""
    defaults = BatchOptions()
    assert {name: getattr(defaults, name) for name in OLD_KEYWORDS} == OLD_KEYWORDS
    assert set(BatchOptions.field_names()) == set(OLD_KEYWORDS) | {"inference"}
    assert defaults.inference == InferenceOptions()
    assert set(CHANGED) == set(OLD_KEYWORDS)


def test_options_and_keywords_give_the_same_plan(tmp_path):
    """Catches prepare() ignoring ``options`` (defaults used) or dropping a keyword on the way to the Plan."""
    root = _folder(tmp_path)
    out = tmp_path / "out"
    by_keywords = batch.prepare(MODEL, [root], out, **CHANGED)
    by_options = batch.prepare(MODEL, [root], out, BatchOptions(**CHANGED))
    assert _plan_view(by_keywords) == _plan_view(by_options)
    assert by_options.options == BatchOptions(**CHANGED)
    # and the values really arrived (both forms wrong alike would pass the comparison above)
    assert by_options.index_path == out / "index.csv"  # one index for every shard and writer
    assert 0 < len(by_options.items) < 6  # shard 1 of 2 of six files
    assert by_options.meta == {"task": "predict", "model": "test-model", "threshold": 0.4, "median_filter": 0.5,
                               "min_duration": 0.3, "hop": 0.4, "pad_tail": True, "dtype": "bf16",
                               "backend": "torch", "labels": ["dog", "engine"], "exclude_labels": ["park"],
                               "class_thresholds": {"dog": 0.6}}
    assert by_options.options.inference == InferenceOptions(
        dtype="bf16", backend="torch", hop=0.4, layer="conv", pooling="mean+max", threshold=0.4, median_filter=0.5,
        min_duration=0.3, pad_tail=True, device="cpu", batch_size=3, workers=0, progress=True,
        labels=("dog", "engine"), exclude_labels=("park",), class_thresholds={"dog": 0.6}, feature_device="model",
        stream_threshold_s=60.0)
    assert (by_options.task, by_options.level, by_options.overwrite, by_options.device) == (
        "predict", "clip", True, "cpu")
    # no options and no keywords: the old defaults
    plain = batch.prepare(MODEL, [root], out)
    assert plain.options == BatchOptions() and plain.index_path == out / "index.csv" and len(plain.items) == 6
    assert not out.exists()  # prepare writes nothing


def test_overrides_win_over_options_and_keep_the_rest(tmp_path):
    """Catches options applied over the keywords (wrong order) and keywords replacing the options wholesale."""
    root = _folder(tmp_path, n=2)
    opts = BatchOptions(task="embed", layer="conv", batch_size=4, shard=(1, 2))
    plan = batch.prepare(MODEL, [root], tmp_path / "out", opts, layer="scene", shard=None)
    assert plan.options == dataclasses.replace(opts, layer="scene", shard=None)
    assert plan.options.batch_size == 4 and plan.meta["layer"] == "scene" and plan.index_path.name == "index.csv"
    assert opts.layer == "conv"  # the caller's options are not changed
    merged = merge_batch_options(opts, {"threshold": 0.2})
    assert (merged.threshold, merged.layer, merged.batch_size) == (0.2, "conv", 4)
    assert merge_batch_options(opts, {}) is opts and merge_batch_options(None, {}) == BatchOptions()


@pytest.mark.parametrize("call", ["prepare", "run"])
def test_unknown_option_names_raise_type_error_listing_the_known_ones(tmp_path, call):
    """Catches ``**overrides`` swallowing a misspelt option (``tresh=0.5`` silently ignored)."""
    root = _folder(tmp_path, n=1)
    with pytest.raises(TypeError, match=rf"^{call}\(\) got unknown option\(s\) 'tresh'\. Known: ") as info:
        getattr(batch, call)(MODEL, [root], tmp_path / "out", BatchOptions(), tresh=0.5)
    assert str(info.value).endswith("Known: " + ", ".join(BatchOptions.field_names()))
    with pytest.raises(TypeError, match="options must be a BatchOptions, got dict"):
        getattr(batch, call)(MODEL, [root], tmp_path / "out", {"task": "predict"})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [
    {"task": "tag"}, {"level": "frames"}, {"layer": "lstm"}, {"pooling": "median"}, {"backend": "tensorrt"},
    {"hop": 0.3}, {"hop": True}, {"dtype": "fp64"}, {"threshold": 1.5}, {"threshold": float("nan")},
    {"threshold": -0.1}, {"median_filter": -1.0}, {"min_duration": float("inf")}, {"batch_size": 0},
    {"workers": -1}, {"shard": "3/2"}, {"shard": (0, 2)}, {"shard": "2-of-8"}, {"shard": (1.5, 2)},
], ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_invalid_values_raise_value_error_before_anything_is_written(tmp_path, bad):
    """Catches a check that was lost in the move (the bad value reaches the job) or that runs after files exist."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        BatchOptions(**bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        dataclasses.replace(BatchOptions(), **bad)  # replace() checks again, so overrides are checked too
    root = _folder(tmp_path, n=1)
    out = tmp_path / "out"
    for kwargs in (bad, {"options": BatchOptions(task="predict"), **bad}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            batch.run("no-such-model", [root], out, **kwargs)  # a model that would fail to load: it is never loaded
        assert not out.exists()


def test_shard_is_stored_as_a_tuple():
    """Catches ``"2/8"`` kept as text: options equal in meaning would compare unequal, and the suffix would differ."""
    assert BatchOptions(shard="2/8").shard == (2, 8)
    assert BatchOptions(shard="2/8") == BatchOptions(shard=(2, 8)) == BatchOptions(shard=[2, 8])
    assert dataclasses.replace(BatchOptions(shard="2/8"), task="predict").shard == (2, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        BatchOptions().shard = (1, 2)  # type: ignore[misc]


def test_every_inference_option_is_a_visible_keyword_of_embed_predict_and_iterate():
    """Catches an option that iterate() (or a DcaseNet method) hides behind **kwargs or lacks, and a keyword that
    is no option (it would reach InferenceOptions as an unknown name)."""
    from dcasenet_hub import DcaseNet
    from dcasenet_hub.inference import embed, iterate, predict

    names = set(InferenceOptions.field_names())
    own = {"model", "x", "inputs", "sample_rate", "options", "embeddings", "predictions"}
    embed_only = {"layer", "pooling"}
    predict_only = {"threshold", "class_thresholds", "labels", "exclude_labels", "median_filter", "min_duration"}
    for fn, expected in ((iterate, names), (embed, names - predict_only), (predict, names - embed_only),
                         (DcaseNet.embed, names - predict_only), (DcaseNet.predict, names - embed_only)):
        params = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), fn
        assert set(params) - own == expected, fn.__qualname__
    for fp32 in (None, "fp32", "float32"):
        assert batch.settings_meta("embed", {"model": "m"}, InferenceOptions(dtype=fp32))["dtype"] == "fp32"
    assert InferenceOptions(dtype="bfloat16").dtype == "bf16"


def test_cli_builds_one_batch_options_from_its_flags(tmp_path, monkeypatch):
    """Catches the command line dropping a flag on the way (e.g. --min-duration or --pad-tail not passed on)."""
    from dcasenet_hub.cli import main

    root = _folder(tmp_path, n=1)
    seen = []

    def fake_prepare(model, inputs, output_dir, options=None, **overrides):
        seen.append((model, [str(i) for i in inputs], Path(output_dir), options, overrides))
        raise FileNotFoundError("stopped by the test")

    monkeypatch.setattr(batch, "prepare", fake_prepare)
    code = main(["predict", str(root), "-o", str(tmp_path / "out"), "--model", "m", "--threshold", "0.4",
                 "--median-filter", "0.5", "--min-duration", "0.3", "--hop", "0.4", "--pad-tail", "--device", "cpu",
                 "--batch-size", "3", "--workers", "0", "--shard", "1/2", "--overwrite", "-q"])
    assert code == 2  # the test's FileNotFoundError is reported as a usage error
    assert seen == [("m", [str(root)], tmp_path / "out", BatchOptions(
        task="predict", threshold=0.4, median_filter=0.5, min_duration=0.3, hop=0.4, pad_tail=True, device="cpu",
        batch_size=3, workers=0, shard=(1, 2), overwrite=True, progress=False), {})]
    seen.clear()
    assert main(["embed", str(root), "-o", str(tmp_path / "out"), "--model", "m", "--level", "clip", "--layer",
                 "scene", "--pooling", "max", "--dtype", "bf16"]) == 2
    assert seen[0][3] == BatchOptions(task="embed", level="clip", layer="scene", pooling="max", dtype="bf16")
    seen.clear()
    # no flags: the options' own defaults, the same as the Python API's
    assert main(["embed", str(root), "-o", str(tmp_path / "out"), "--model", "m"]) == 2
    assert seen[0][3] == BatchOptions(task="embed")


def test_an_options_run_resumes_a_keyword_run_and_overrides_reach_the_files(tmp_path, v3_model):
    """Catches execute() not passing the options on (outputs recorded with other settings would not be skipped, or
    an override would not change what is computed and recorded)."""
    root = _folder(tmp_path, n=2, seconds=1.2)
    out = tmp_path / "out"
    first = batch.run(v3_model, [root], out, task="predict", threshold=0.4, workers=0, dtype="fp32")
    assert (first.done, first.skipped, first.failed) == (2, 0, [])
    opts = BatchOptions(task="predict", threshold=0.4, workers=0)
    again = batch.run(v3_model, [root], out, opts, load=lambda name: pytest.fail("nothing to compute"))
    assert (again.done, again.skipped, again.failed) == (0, 2, [])
    changed = batch.run(v3_model, [root], out, opts, threshold=0.6)
    assert (changed.done, changed.skipped, changed.failed) == (2, 0, [])
    record = json.loads((out / "f0.json").read_text())
    assert record["meta"]["threshold"] == 0.6  # recorded for resume
    assert record["events"]["threshold"] == 0.6  # and used by iterate() for the event list
