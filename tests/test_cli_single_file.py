"""``-o FILE`` for one input: one file in the format of its extension, or a one-line refusal; never a folder named
like a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(2 * 24000) / 24000
    for i, name in enumerate(("a.wav", "b.wav")):
        sf.write(root / name, (0.2 * np.sin(2 * np.pi * (300 + 500 * i) * t)).astype("float32"), 24000)
    return root


def test_one_input_and_a_file_name_give_that_one_file(clips: Path, tmp_path: Path, authors_checkpoint: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(authors_checkpoint), "-q"]
    assert main(["predict", str(clips / "a.wav"), "-o", str(tmp_path / "out.json"), *model]) == 0
    assert main(["predict", str(clips / "a.wav"), "-o", str(tmp_path / "ev.csv"), *model]) == 0
    assert main(["embed", str(clips / "a.wav"), "-o", str(tmp_path / "emb.npz"), *model]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz", "ev.csv", "out.json"]
    assert all(p.is_file() for p in tmp_path.iterdir())
    pred = json.loads((tmp_path / "out.json").read_text())
    assert pred["source"].endswith("a.wav") and "scene" in pred and "events" in pred
    assert (tmp_path / "ev.csv").read_text().splitlines()[0] == "filename,onset,offset,event_label"
    with np.load(tmp_path / "emb.npz") as z:
        assert z["frame"].shape[1] == 512 and z["clip"].shape == (512,)
    capsys.readouterr()
    # an existing file is kept unless --overwrite
    assert main(["embed", str(clips / "a.wav"), "-o", str(tmp_path / "emb.npz"), *model]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "inputs", "output", "says"), [
    ("embed", ["."], "emb.npz", "give one audio file"),
    ("predict", ["a.wav", "b.wav"], "out.json", "give one audio file"),
    ("predict", ["a.wav"], "out.npz", "predict writes .json, .csv, .tsv"),
    ("embed", ["a.wav"], "out.json", "embed writes .npz"),
])
def test_a_file_name_for_what_is_not_one_input_is_refused_in_one_line(
        command: str, inputs: list[str], output: str, says: str, clips: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main([command, *(str(clips / i) for i in inputs), "-o", str(tmp_path / output), "--model", "no-such-id"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / output).exists()


@pytest.mark.parametrize(("command", "output"), [("embed", "out.npz"), ("predict", "out.json"),
                                                  ("predict", "ev.csv")])
def test_a_missing_input_for_a_file_name_is_said_to_be_not_found(
        command: str, output: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.mp3"
    assert main([command, str(missing), "-o", str(tmp_path / "outdir"), "--model", "no-such-id"]) == 2
    capsys.readouterr()  # the folder form: its exit code is the one a missing input has
    code = main([command, str(missing), "-o", str(tmp_path / output), "--model", "no-such-id"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"input not found: {missing}; check the path" in err and "give one audio file" not in err, err
    assert not (tmp_path / output).exists()
