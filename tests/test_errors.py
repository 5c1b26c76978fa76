"""The error family: one base, a few areas, the built-in bases users catch kept, one exit code per area; and the
scope of a failure: only an input's own problems (and running out of memory on one batch) become failed inputs,
anything else (a bug in the forward pass, a device fault) ends the call with its exception."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from dcasenet_hub import errors
from dcasenet_hub.cli.common import exit_code
from dcasenet_hub.cli.main import main

SR = 24000

#: Every public class, with the built-in exception that ``except`` clauses written against it catch.
BUILTIN_BASES = {
    "AudioLoadError": ValueError, "InputError": ValueError, "InputTooShortError": ValueError,
    "OptionsError": ValueError,
    "UnknownModelError": ValueError, "WeightsNotPublishedError": ValueError, "ModelFileError": ValueError,
    "ModelNotFoundError": FileNotFoundError, "CheckpointMismatchError": ValueError, "ManifestError": ValueError,
    "DownloadError": RuntimeError, "OfflineError": ConnectionError, "NetworkUnavailableError": OSError,
    "ChecksumMismatchError": OSError, "DownloadTooLargeError": OSError, "HubAccessError": PermissionError,
    "DataError": ValueError, "DatasetLayoutError": FileNotFoundError, "UnsafeArchiveError": ValueError,
    "OnnxUnavailableError": ImportError, "MissingMatplotlibError": ImportError,
    "TrainingDivergedError": RuntimeError, "DiskSpaceError": OSError,
}
AREAS = (errors.InputError, errors.OptionsError, errors.ModelError, errors.DownloadError, errors.DataError,
         errors.MissingDependencyError)


def _public_classes() -> dict[str, type]:
    return {n: c for n, c in vars(errors).items()
            if inspect.isclass(c) and issubclass(c, BaseException) and not n.startswith("_")}


def test_every_class_is_in_the_family_and_keeps_its_builtin_base() -> None:
    classes = _public_classes()
    for name, cls in classes.items():
        assert issubclass(cls, errors.DcaseNetHubError), name
        assert cls.__module__ == "dcasenet_hub.errors", name
        assert sum(issubclass(cls, a) for a in AREAS) <= 1, f"{name} is in two areas"
    for name, base in BUILTIN_BASES.items():
        assert issubclass(getattr(errors, name), base), f"except {base.__name__} no longer catches {name}"
    assert set(BUILTIN_BASES) <= set(classes)


def test_overlapping_classes_are_one_class() -> None:
    """The same failure has one class: unreachable host and offline; a bad hash in either downloader."""
    assert errors.NetworkUnavailableError is errors.OfflineError
    assert issubclass(errors.ChecksumMismatchError, errors.DownloadError)
    assert issubclass(errors.AudioLoadError, errors.InputError) and issubclass(errors.InputTooShortError,
                                                                                errors.InputError)


def test_each_class_builds_its_message() -> None:
    assert str(errors.AudioLoadError("a.wav", "is empty")) == "a.wav: is empty"
    data = errors.DataError("train.csv", [f"row {i}: no label" for i in range(3)])
    assert str(data).startswith("3 problem(s) in the data train.csv") and data.problems[2] == "row 2: no label"
    for cls in (errors.DatasetLayoutError, errors.UnsafeArchiveError):
        exc = cls("data/x: missing meta.csv")
        assert str(exc) == "data/x: missing meta.csv" and exc.problems == ["data/x: missing meta.csv"]
        assert isinstance(exc, errors.DataError)
    load = errors.ModelLoadError("nope", errors.UnknownModelError("Unknown model 'nope'"))
    assert str(load) == "model could not be fetched or loaded (nope): Unknown model 'nope'"


@pytest.mark.parametrize(("exc", "code"), [
    (errors.AudioLoadError("a.wav", "file not found"), 1),
    (errors.OptionsError("threshold=2 is not in [0, 1]"), 2),
    (errors.DataError("d", ["x"]), 2),
    (errors.DiskSpaceError("no space"), 2),
    (errors.OnnxUnavailableError("pip install onnxruntime"), 2),
    (ValueError("bad argument"), 2),
    (FileNotFoundError("no such input"), 2),
    (errors.UnknownModelError("nope"), 3),
    (errors.OfflineError("no network"), 3),
    (errors.ChecksumMismatchError("bad md5"), 3),
    (errors.HubAccessError("no token"), 3),
    (errors.ModelLoadError("x", OSError("gone")), 3),
    (RuntimeError("CUDA error: an illegal memory access"), 4),
    (TypeError("a bug"), 4),
])
def test_cli_exit_code_of_each_area(exc: BaseException, code: int, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """What a command raises decides its exit code by area, and the user sees one line, never a traceback."""
    assert exit_code(exc) == code

    def fails(args: object) -> int:
        raise exc

    monkeypatch.setattr("dcasenet_hub.cli.hub._list", fails)
    assert main(["list"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == (1 if "\n" not in str(exc) else len(str(exc).splitlines()))
    assert err.startswith("dcasenet-hub list: error: ") and "Traceback" not in err


# ---- failure scope ----------------------------------------------------------------------------------------------


def _planted(exc: BaseException):
    def forward(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise exc

    return forward


def _clips(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(SR * 2)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("bug", [RuntimeError("planted bug in the forward pass"), TypeError("planted bug")])
def test_a_bug_in_the_forward_pass_raises_instead_of_failing_every_input(v3_model, monkeypatch: pytest.MonkeyPatch,
                                                                         bug: BaseException) -> None:
    from dcasenet_hub.inference import iterate

    monkeypatch.setattr(torch.nn.GRU, "forward", _planted(bug))
    with pytest.raises(type(bug), match="planted bug"):
        v3_model.embed(_clips(), sample_rate=SR)
    with pytest.raises(type(bug), match="planted bug"):
        list(iterate(v3_model, _clips(), sample_rate=SR))


def test_out_of_memory_on_one_batch_fails_its_inputs_and_the_call_goes_on(v3_model,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dcasenet_hub.inference import iterate

    monkeypatch.setattr(torch.nn.GRU, "forward", _planted(torch.OutOfMemoryError("CUDA out of memory")))
    results = list(iterate(v3_model, [*_clips(2), np.full(SR, np.nan, np.float32)], sample_rate=SR, batch_size=1))
    assert len(results) == 3 and all(not r.ok for r in results)
    by_index = {r.index: r for r in results}
    assert isinstance(by_index[0].error, torch.OutOfMemoryError)
    assert isinstance(by_index[2].error, errors.InputError)  # the input's own problem, found before the network


#: What torch's CPU allocator raises when memory runs out (``ulimit -v`` or a full machine).
_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 1230000 bytes. Error code 12 (Cannot allocate memory)")


def test_cli_out_of_memory_on_a_batch_fails_its_inputs_with_the_fix(
        v3_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    import soundfile as sf

    v3_model.save_pretrained(tmp_path / "model")
    for i, clip in enumerate(_clips(2)):
        sf.write(tmp_path / f"clip{i}.wav", clip, SR)
    monkeypatch.setattr(torch.nn.GRU, "forward", _planted(RuntimeError(_CPU_OOM)))
    code = main(["embed", str(tmp_path / "clip0.wav"), str(tmp_path / "clip1.wav"), "--model",
                 str(tmp_path / "model"), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1, capsys.readouterr().err
    with open(tmp_path / "out" / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["error"].endswith("can't allocate memory: you tried to allocate 1230000 bytes. Error code 12 "
                                   "(Cannot allocate memory); out of memory: lower --batch-size (batch_size) or "
                                   "--workers, or free memory, then run it again") for r in rows), rows


@pytest.mark.parametrize("oom", [RuntimeError(_CPU_OOM), MemoryError()], ids=["torch-allocator", "MemoryError"])
def test_cli_out_of_memory_outside_a_batch_is_one_line_with_the_fix_not_a_bug_or_a_bad_checkpoint(
        authors_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], oom: BaseException) -> None:
    """Loading the weights on a machine without the memory for them: not "is not a model checkpoint" (exit 3), not
    "unexpected ... a bug" (exit 4)."""
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", _clips(1)[0], SR)

    def load(*args: object, **kwargs: object) -> None:
        raise oom

    monkeypatch.setattr(torch, "load", load)
    code = main(["embed", str(tmp_path / "clip.wav"), "--model", str(authors_checkpoint), "-o",
                 str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dcasenet-hub embed: error: "), err
    assert lines[0].endswith("; out of memory: lower --batch-size (batch_size) or --workers, or free memory, then "
                             "run it again"), err
    assert "not a model checkpoint" not in err and "unexpected" not in err


def test_bad_inputs_still_fail_alone(v3_model) -> None:
    from dcasenet_hub.inference import iterate

    clips = _clips(2)
    results = sorted(iterate(v3_model, [clips[0], np.zeros(10, np.float32), "missing.wav", clips[1]],
                             sample_rate=SR), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, False, True]
    assert all(isinstance(r.error, errors.InputError) for r in results if not r.ok)


def test_cli_reports_a_forward_pass_bug_as_one_error_line_not_as_failed_inputs(
        v3_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    v3_model.save_pretrained(tmp_path / "model")
    for i, clip in enumerate(_clips(2)):
        sf.write(tmp_path / f"clip{i}.wav", clip, SR)
    monkeypatch.setattr(torch.nn.GRU, "forward", _planted(RuntimeError("planted bug in the forward pass")))
    code = main(["embed", str(tmp_path / "clip0.wav"), str(tmp_path / "clip1.wav"), "--model",
                 str(tmp_path / "model"), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 4, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING ")]  # log lines
    assert lines == ["dcasenet-hub embed: error: unexpected RuntimeError: planted bug in the forward pass (a bug or "
                     "a device fault, not the arguments or inputs; run again with -v for the traceback)"], err
    assert "failed" not in err


def test_docs_state_the_exit_codes_the_commands_return() -> None:
    """README and docs/weights.md say what ``download``/``push`` and an unexpected error return (3, 3, 4)."""
    import re

    from dcasenet_hub.cli.common import EXIT_INTERNAL, EXIT_MODEL

    root = Path(__file__).parents[1]
    weights = " ".join((root / "docs" / "weights.md").read_text(encoding="utf-8").split())
    push = re.search(r"`push` first checks the token.*? exits with (\d)", weights)
    assert push is not None and int(push.group(1)) == EXIT_MODEL
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    assert f"{EXIT_MODEL} model could not be fetched or loaded" in readme and "a download failed" in readme
    assert f"{EXIT_INTERNAL} unexpected error" in readme
