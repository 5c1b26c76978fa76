"""TrainOptions: how a training run goes, declared once, checked once, taken by train() and the train command."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dcasenet_hub.errors import OptionsError
from dcasenet_hub.train import TrainOptions


@pytest.mark.parametrize("name, value", [("dtype", "int8"), ("workers", -1), ("workers", 1.5), ("seed", True),
                                         ("eval_batch_size", 0), ("resume", "yes"), ("stages", []),
                                         ("stages", [""]), ("cache_dir", 3)])
def test_bad_values_fail_naming_the_option_and_what_it_allows(name, value):
    """Broken variant caught: a field without its check (the value would reach the trainer, failing there or not
    at all)."""
    with pytest.raises(OptionsError, match=rf"^{name}=.*: must be "):
        TrainOptions(**{name: value})


def test_one_form_per_value_so_equal_options_compare_equal(tmp_path):
    assert TrainOptions(dtype="amp") == TrainOptions(dtype="fp16") == TrainOptions(dtype="float16")
    assert TrainOptions(stages=["joint"]).stages == ("joint",) and TrainOptions(stages="joint").stages == ("joint",)
    assert TrainOptions(cache_dir=tmp_path).cache_dir == str(tmp_path)
    described = TrainOptions.describe()
    assert tuple(described) == TrainOptions.field_names()
    assert all(doc and allowed for _default, doc, allowed in described.values())
    assert "workers: DataLoader workers per task" in TrainOptions.__doc__


def test_train_takes_options_and_keyword_overrides_and_refuses_before_any_work(monkeypatch, tmp_path):
    """train() merges options and keywords (keywords win) and checks them before touching data or the output
    folder. Broken variants caught: keywords ignored when options are given; precision= not mapped onto dtype."""
    from dcasenet_hub.train import loop

    seen: dict[str, TrainOptions] = {}

    def stop(roots, opts, dist):  # the first step that reads data: only the merged options matter here
        seen["opts"] = opts
        raise RuntimeError("stopped")

    monkeypatch.setattr(loop, "_prepared_data", stop)
    roots = {"asc_root": tmp_path}
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train("v3-asc", out_dir=tmp_path / "a", options=TrainOptions(seed=3, workers=1), workers=0,
                   device="cpu", **roots)
    assert seen["opts"] == TrainOptions(seed=3, workers=0, device="cpu", progress=False)  # None: no terminal here
    # a run that stopped before anything but recipe.json was written leaves no folder that refuses the rerun
    assert not (tmp_path / "a").exists()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match="stopped"):
        warnings.simplefilter("always")
        loop.train("v3-asc", out_dir=tmp_path / "b", precision="bf16", device="cpu", **roots)
    assert seen["opts"].dtype == "bf16"
    assert any(issubclass(w.category, DeprecationWarning) and "dtype=" in str(w.message) for w in caught)
    # fp16 off CUDA is refused before the output folder is made
    with pytest.raises(ValueError, match="needs a CUDA device"):
        loop.train("v3-asc", out_dir=tmp_path / "c", dtype="fp16", device="cpu", **roots)
    assert not (tmp_path / "c").exists()
    with pytest.raises(OptionsError, match="^dtype='int8'"):
        loop.train("v3-asc", out_dir=tmp_path / "d", dtype="int8", **roots)
    with pytest.raises(ValueError, match=r"Unknown stage\(s\) \['nope'\]"):
        loop.train("v3-asc", out_dir=tmp_path / "f", stages=["nope"], **roots)
    # recipe values the optimiser or the crops would refuse only after the data is prepared
    with pytest.raises(ValueError, match=r"lr \(--lr\) must be a finite number >= 0, got -1"):
        loop.train("v3-asc", out_dir=tmp_path / "g", overrides={"lr": -1}, **roots)
    with pytest.raises(ValueError, match=r"crop_seconds \(--crop TASK=S\) must be seconds > 0, got \{'asc': 0"):
        loop.train("v3-asc", out_dir=tmp_path / "h", overrides={"crop_seconds": {"asc": 0}}, **roots)
    assert not (tmp_path / "g").exists() and not (tmp_path / "h").exists()


def test_cli_flags_map_onto_train_options_and_bad_values_exit_2(monkeypatch, tmp_path, capsys):
    """Flags left out keep TrainOptions' defaults (the same as train()'s); a bad value is one line, exit 2."""
    import dcasenet_hub.train
    from dcasenet_hub.cli import main

    got: dict[str, object] = {}

    def fake(recipe, *, out_dir, options, **kw):
        got["options"] = options
        return dcasenet_hub.train.TrainResult(run_dir=Path(out_dir))

    monkeypatch.setattr(dcasenet_hub.train, "train", fake)
    assert main(["train", "v3-asc", "-o", str(tmp_path / "r"), "--asc-root", str(tmp_path), "--no-progress"]) == 0
    assert got["options"] == TrainOptions(progress=False)
    assert main(["train", "v3-asc", "-o", str(tmp_path / "r"), "--asc-root", str(tmp_path), "--precision", "amp",
                 "--workers", "2", "--seed", "7", "--stage", "joint", "--resume"]) == 0
    assert got["options"] == TrainOptions(dtype="fp16", workers=2, seed=7, stages=("joint",), resume=True)
    capsys.readouterr()
    assert main(["train", "v3-asc", "-o", str(tmp_path / "r"), "--asc-root", str(tmp_path), "--workers", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the flag as typed, not the Python name (the broken variant: "workers=-2: ...")
    assert err == ["dcasenet-hub train: error: --workers -2: must be a whole number >= 0"]
    assert main(["finetune", str(tmp_path), "--task", "classification", "-o", str(tmp_path / "m"), "--epochs", "0",
                 "-q"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dcasenet-hub finetune: error: --epochs 0: must be a whole number >= 1"]


def test_defaults_agree_across_inference_fine_tuning_and_training():
    """One meaning per default: progress None (bars when stderr is a terminal), device None (the model's device, or
    CUDA when available for a model not yet built), dtype fp32 (None or "fp32"). Broken variant caught: a default
    drifting in one options class (progress True in training, "auto" in one place and None in another)."""
    from dcasenet_hub import FinetuneOptions
    from dcasenet_hub._progress import show_progress
    from dcasenet_hub.inference import InferenceOptions

    defaults = [InferenceOptions(), FinetuneOptions(), TrainOptions()]
    assert {o.progress for o in defaults} == {None} and {o.device for o in defaults} == {None}
    assert {o.dtype or "fp32" for o in defaults} == {"fp32"}
    assert show_progress(None) is False  # pytest's stderr is not a terminal


@pytest.mark.parametrize("flags, line", [
    (["--crop", "0"], "--crop 0.0: must be a number of seconds >= 0.8 (one DcaseNet step)"),
    (["--crop", "0.5"], "--crop 0.5: must be a number of seconds >= 0.8 (one DcaseNet step)"),
    (["--validation-fraction", "1.5"], "--validation-fraction 1.5: must be a number between 0 and 1 (exclusive)"),
    (["--lr", "-1"], "--lr -1.0: must be a number > 0"),
    (["--patience", "-1"], "--patience -1: must be a whole number >= 1, or 0 (never stop)"),
])
def test_finetune_value_errors_name_the_flag_as_typed_before_any_work(tmp_path, capsys, flags, line):
    """Broken variants caught: the Python name (--crop-s, validation_fraction), a value the command line cannot
    type (", or None", or for --patience its spelling 0 left out), or a check that runs only after the data is read
    or the model trained."""
    from dcasenet_hub.cli import main

    assert main(["finetune", str(tmp_path / "nowhere"), "--task", "classification", "-o", str(tmp_path / "m"),
                 *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"dcasenet-hub finetune: error: {line}"]


def test_finetune_into_an_existing_file_is_refused_before_any_work(tmp_path, capsys):
    from dcasenet_hub.cli import main

    (tmp_path / "clip.wav").write_bytes(b"not a folder")
    assert main(["finetune", str(tmp_path / "nowhere"), "--task", "classification", "-o",
                 str(tmp_path / "clip.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dcasenet-hub finetune: error: --output {tmp_path / 'clip.wav'}: must be a folder (not an existing "
                   "file)"]
