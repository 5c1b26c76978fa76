"""The examples run as written: the file names the docs use exist after make_example_audio.py, a missing file is
said in one line, and no example writes into the working directory."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _example_clips() -> set[str]:
    return {name for name, *_ in runpy.run_path(str(EXAMPLES / "make_example_audio.py"))["CLIPS"]}


def test_every_example_audio_name_in_the_docs_is_made_by_make_example_audio() -> None:
    clips = _example_clips()
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(EXAMPLES.glob("*.py"))]
    used = {(p.name, m) for p in texts for m in re.findall(r"examples/audio/([\w.-]+\.(?:wav|flac))", p.read_text())}
    assert used, "no example file named in the docs"
    missing = sorted((where, name) for where, name in used if name not in clips)
    assert not missing, f"named in the docs but not made by examples/make_example_audio.py: {missing}"
    # the README's Python block uses the example clips, not a file the reader does not have
    readme = (REPO / "README.md").read_text()
    python_block = readme.split("```python", 1)[1].split("```", 1)[0]
    names = set(re.findall(r'"([^"]+\.(?:wav|flac))"', python_block))
    assert names and all(n.startswith("examples/audio/") and Path(n).name in clips for n in names), names


def test_onnx_numpy_says_file_not_found_for_a_missing_file(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not read: the audio is checked first")
    for args, missing in (([str(graph), str(tmp_path / "nope.wav")], "nope.wav"),
                          ([str(tmp_path / "none.onnx"), str(tmp_path / "nope.wav")], "none.onnx")):
        proc = subprocess.run([sys.executable, str(EXAMPLES / "onnx_numpy.py"), *args], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode != 0
        err = proc.stderr.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert missing in err and "file not found" in err, err


def test_event_detection_writes_into_its_output_folder_not_the_working_directory(tmp_path: Path,
                                                                                  authors_checkpoint: Path) -> None:
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "in" / "beeps.wav"
    audio.parent.mkdir()
    t = np.arange(2 * 24000) / 24000
    sf.write(audio, (0.3 * np.sin(2 * np.pi * 880 * t)).astype("float32"), 24000)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(EXAMPLES / "event_detection.py"), str(audio), "--model",
                           str(authors_checkpoint), "-o", str(tmp_path / "out")], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert list(cwd.iterdir()) == []
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"beeps.events.csv", "beeps.scores.tsv"} <= written, written


@pytest.mark.integration  # a whole example (matplotlib, several passes of the network): with the docs' blocks
def test_frame_grid_draws_the_docs_picture_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)  # not the repository: a default relative to it would fail, or write elsewhere
    grid = runpy.run_path(str(EXAMPLES / "frame_grid.py"))
    assert grid["DOCS_PICTURE"] == REPO / "docs" / "frame_grid.png" and grid["DOCS_PICTURE"].is_file()
    grid["main"](tmp_path / "new" / "grid.png")
    assert (tmp_path / "new" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
