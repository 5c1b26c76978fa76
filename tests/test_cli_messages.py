"""Messages that name the right thing: the option the command really has, what an input is read as, and a bad
output format said before any work."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import closed_port

from dcasenet_hub.cli import main


def _wav(path: Path, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 24000)) / 24000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 24000)
    return path


def test_finetune_offline_names_its_own_option_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for kind in ("a", "b"):
        for i in range(3):
            _wav(tmp_path / "data" / kind / f"{i}.wav")
    code = main(["finetune", str(tmp_path / "data"), "--task", "classification", "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "--base PATH" in err, err


def test_a_text_input_is_said_to_be_read_as_a_list_of_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from dcasenet_hub.batch.discovery import discover

    a, b = _wav(tmp_path / "a.wav", 0.2), _wav(tmp_path / "b.wav", 0.2)
    listing = tmp_path / "files.txt"
    listing.write_text(f"{a.name}\n# a comment\n{b}\n")
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"):
        items = discover([listing])
    assert [i.path.name for i in items] == ["a.wav", "b.wav"]
    said = [r.getMessage() for r in caplog.records]
    assert any(str(listing) in m and "list of 2 audio paths" in m for m in said), said


def test_plot_refuses_an_unknown_image_format_before_loading_the_model(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    wav = _wav(tmp_path / "clip.wav")
    # an unknown model id: had the format check come after loading, the exit code would be 3
    code = main(["plot", str(wav), "-o", str(tmp_path / "p.xyz"), "--model", "no-such-model"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and ".xyz" in err and ".png" in err, err
    assert not (tmp_path / "p.xyz").exists()


@pytest.mark.parametrize("case", ["offline and not cached", "damaged checkpoint", "unknown label threshold"])
def test_a_job_that_cannot_start_writes_nothing(case: str, tmp_path: Path, authors_checkpoint: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(tmp_path / "cache"))  # empty
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(authors_checkpoint.read_bytes()[:100_000])
    model, extra, expected = {
        "offline and not cached": ("dcasenet-v3", [], 3),
        "damaged checkpoint": (str(damaged), [], 3),
        "unknown label threshold": (str(authors_checkpoint), ["--threshold", "cat=0.5"], 2)}[case]
    out = tmp_path / "out"
    code = main(["predict", str(_wav(tmp_path / "a.wav")), "-o", str(out), "--model", model, "-q", *extra])
    err = capsys.readouterr().err
    assert code == expected, err
    assert not out.exists()  # no folder of "pending" rows for a job that never ran


def test_a_model_that_cannot_be_fetched_is_tried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DCASENET_HUB_MIRROR", f"http://127.0.0.1:{closed_port()}")  # the download fails at once
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"):
        code = main(["embed", str(_wav(tmp_path / "a.wav")), "-o", str(out), "--model", "dcasenet-v3"])
    tries = [r for r in caplog.records if r.getMessage().startswith("Downloading dcasenet-v3")]
    assert code == 3 and len(tries) == 1 and not out.exists(), [r.getMessage() for r in caplog.records]


def test_commands_draw_no_progress_bars_into_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stderr here is not a terminal (a log file, a CI job): bars are noise there unless asked for."""
    assert main(["data", "make-mini", "-o", str(tmp_path / "mini"), "--tasks", "sed", "--sed-duration", "1",
                 "--sed-classes", "1"]) == 0
    err = capsys.readouterr().err
    assert "mini SED" not in err and "%|" not in err, err


def test_an_output_folder_that_cannot_be_made_stops_the_job_in_one_line(tmp_path: Path, authors_checkpoint: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    code = main(["embed", str(_wav(tmp_path / "a.wav")), "-o", str(out), "--model", str(authors_checkpoint), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err  # not one failed input per file and a line per folder problem
    assert f"cannot create the output folder {out}" in err and "choose another output folder (-o)" in err, err


def test_a_repo_id_the_hub_has_no_model_for_is_a_model_error_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The job fingerprints a named model before it starts: the Hub's "no such repo / not a dcasenet-hub model"
    (a ValueError) is the model's error (exit 3), as loading it says, not a usage error (exit 2)."""
    from dcasenet_hub.hub import sources

    def no_such_repo(repo_id: str, **kw: object) -> Path:
        raise ValueError(f"Hugging Face repo {repo_id!r} (revision main) not found or not accessible")

    monkeypatch.setattr(sources, "fetch_hf", no_such_repo)
    out = tmp_path / "out"
    code = main(["embed", str(_wav(tmp_path / "a.wav")), "-o", str(out), "--model", "some-org/missing", "-q"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and not out.exists(), err
    assert err.startswith("dcasenet-hub embed: error: model could not be fetched or loaded (some-org/missing): "
                          "Hugging Face repo 'some-org/missing' (revision main) not found"), err
