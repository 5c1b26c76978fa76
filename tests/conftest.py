"""Shared fixtures: the authors'-format v3 checkpoint (decompressed once per session) and a model loaded from it.
The environment isolation every test runs in is the repository's ``conftest.py`` (it covers ``benchmarks/`` too)."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def authors_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to the decompressed authors'-format checkpoint (torch.save(state_dict), deterministic weights)."""
    out = tmp_path_factory.mktemp("authors") / "best_ASC.pt"
    with lzma.open(FIXTURES / "v3_authors_format.pt.xz") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="session")
def v3_state_dict(authors_checkpoint: Path):
    import torch

    return torch.load(authors_checkpoint, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def v3_model(v3_state_dict):
    """v3 in eval mode with the fixture weights (not pretrained: deterministic test weights)."""
    from dcasenet_hub import build_model

    model = build_model("v3")
    model.load_state_dict_strict(v3_state_dict, source="fixture checkpoint")
    return model.eval()


_LEARNING_KEY = pytest.StashKey[list]()


@pytest.fixture()
def learning_report(request: pytest.FixtureRequest):
    """Collects one line per learning check; printed in the terminal summary so every CI log has the numbers."""
    return request.config.stash.setdefault(_LEARNING_KEY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(_LEARNING_KEY, [])
    if lines:
        terminalreporter.section("learning checks (tests/test_train_learning.py)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def responsive_v3():
    """v3 in eval mode with :func:`responsive_model` weights (shared: do not modify)."""
    from helpers import responsive_model

    return responsive_model("v3")
