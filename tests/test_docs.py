"""Every ```python and ```bash block of README.md and docs/*.md runs as written.

Each document's blocks run in order, in one working folder per document that holds what the docs name: the example
clips of ``examples/make_example_audio.py`` (``examples/audio/...``), a few more clips (``new_clip.wav``,
``recordings/``, ``corpus/`` ...) and a two-class ``my_sounds/`` folder. ``dcasenet-v3`` resolves to the tests'
deterministic checkpoint (NOT pretrained) through a manifest override and a loopback mirror, downloaded once into a
cache shared by the blocks; nothing reaches the network. ``pip install ...`` (a line, or the start of a line up to
``&&``) is dropped: the package and its extras are installed where the tests run. Bash blocks run with ``bash -e``;
python blocks as a script.

A block that cannot run here carries an HTML comment on the line before it::

    <!-- docs-test: skip needs the Hugging Face Hub -->
    <!-- docs-test: slow fine-tunes the network for 15 epochs -->

``skip`` blocks are reported as skipped with the reason; ``slow`` ones run under the ``slow`` marker; every other
block is an ``integration`` test (each is a process that loads the network: .ci/run runs them after the default suite).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import FIXTURE_PATH, LoopbackServer, fixture_entry, git_blob_sha1, write_manifest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|slow)\s+(.*?)\s*-->")
_PIP = re.compile(r"^\s*pip install [^&\n]*(&&\s*|$\n?)", re.M)
#: Documents whose blocks another test runs as written (in its own setting), so they are not run twice.
OWN_TEST = {"evaluation.md": "tests/test_evaluation_doc.py runs this page's blocks in an empty folder"}
#: Block timeout: a block that runs longer belongs under the slow marker.
TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    code: str
    mark: str | None
    reason: str


def blocks(path: Path) -> list[Block]:
    """The python and bash blocks of one document, with the docs-test marker of the line before each."""
    lines = path.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(python|bash)\s*$", lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = _MARKER.search(lines[i - 1]) if i else None
            out.append(Block(path.name, i + 1, m.group(1), "\n".join(lines[i + 1:end]),
                             marker.group(1) if marker else None, marker.group(2) if marker else ""))
            i = end
        i += 1
    return out


def _params() -> list:
    params = []
    for doc in DOCS:
        for b in blocks(doc):
            if b.doc in OWN_TEST:
                b = Block(b.doc, b.line, b.lang, b.code, "skip", OWN_TEST[b.doc])
            marks = ([pytest.mark.skip(reason=f"{b.doc}:{b.line}: {b.reason}")] if b.mark == "skip" else
                     [pytest.mark.slow] if b.mark == "slow" else [pytest.mark.integration])
            params.append(pytest.param(b, id=f"{b.doc}:{b.line}", marks=marks))
    return params


def _tone(path: Path, seconds: float, freq: float, *, sr: int = 24000, seed: int = 0) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size)
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype("float32"), sr)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, authors_checkpoint: Path):
    """Environment of the blocks: a mirror serving the test checkpoint as ``dcasenet-v3``, and a filled cache."""
    root = tmp_path_factory.mktemp("docs")
    data = authors_checkpoint.read_bytes()
    entry = fixture_entry(git_blob_sha1(data))
    entry.update(description="docs test: the deterministic fixture checkpoint (NOT pretrained)", trained_tasks=[])
    manifest = write_manifest(root / "manifest.json", {"dcasenet-v3": entry})
    with LoopbackServer({f"/Jungjee/DcaseNet/raw/{entry['sources'][0]['commit']}/{FIXTURE_PATH}": data}) as server:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("DCASENET_HUB_", "HF_HUB_OFFLINE"))}
        environ.update(DCASENET_HUB_MANIFEST=str(manifest), DCASENET_HUB_MIRROR=server.url,
                       DCASENET_HUB_CACHE=str(root / "cache"), HF_HUB_CACHE=str(root / "hf-cache"),
                       PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
                       PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
        fill = subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", "download", "dcasenet-v3", "-q"],
                              env=environ, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        assert fill.returncode == 0, fill.stderr
        template = root / "template"
        shutil.copytree(REPO / "examples", template / "examples",
                        ignore=shutil.ignore_patterns("audio", "__pycache__"))
        made = subprocess.run([sys.executable, str(template / "examples" / "make_example_audio.py")],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        assert made.returncode == 0, made.stderr
        for i, kind in enumerate(("high", "low")):
            for j in range(4):
                _tone(template / "my_sounds" / kind / f"{kind}_{j}.wav", 1.0, 4000 if kind == "high" else 200,
                      seed=10 * i + j)
        for i, name in enumerate(("new_clip.wav", "clip.wav", "rec1.wav", "recordings/rec1.wav",
                                  "recordings/rec2.wav", "clips/a.wav", "corpus/a.wav", "corpus/b.wav")):
            _tone(template / name, 2.0, 300 + 200 * i, seed=100 + i)
        yield environ, template
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def workspaces(env, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


@pytest.mark.parametrize("block", _params())
def test_doc_block_runs_as_written(block: Block, env, workspaces: dict[str, Path],
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    environ, template = env
    if block.doc not in workspaces:  # one folder per document: its blocks build on each other, in order
        workspaces[block.doc] = tmp_path_factory.mktemp("ws")
        shutil.copytree(template, workspaces[block.doc], dirs_exist_ok=True)
    cwd = workspaces[block.doc]
    code = _PIP.sub("", block.code)
    cmd = ["bash", "-e", "-c", code] if block.lang == "bash" else [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{block.doc}:{block.line} failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"


def test_markers_give_a_reason_and_the_readme_main_job_runs() -> None:
    every = [b for doc in DOCS for b in blocks(doc)]
    assert len(every) >= 10
    assert all(b.reason for b in every if b.mark), [f"{b.doc}:{b.line}" for b in every if b.mark and not b.reason]
    readme = blocks(REPO / "README.md")
    main_job = next(b for b in readme if "dcasenet-hub embed" in b.code and "make_example_audio" in b.code)
    assert main_job.mark is None  # the main job is never skipped


def test_readme_fits_two_screens_and_the_docs_carry_no_history() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
    history = re.compile(r"release 0\.1\.0|releases up to|used to give|since 20\d\d-\d\d|\(issue \d+\)|^#+ issue \d+",
                         re.I | re.M)
    found = [f"{doc.name}: {m.group(0)}" for doc in DOCS for m in history.finditer(doc.read_text())]
    assert not found, found
