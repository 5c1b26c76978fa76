"""Shared fixtures: the authors'-format v3 checkpoint (decompressed once per session) and a model loaded from it."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (-n N) each worker gets an equal share of the cores, so N workers with torch's default
    # thread count do not oversubscribe the machine (OpenMP barriers then spin and everything slows down).
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


#: Variables of the machine that would change what a test sees: mirrors, endpoints, offline mode, a torchrun job.
_MACHINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "DCASENET_HUB_MIRROR", "DCASENET_HUB_DATA_MIRROR",
                      "DCASENET_HUB_MANIFEST", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in the same environment, whatever the machine: its own empty caches (weights already
    downloaded there would change what the offline and download tests see) and none of the machine's mirrors,
    endpoints, offline mode or torchrun variables. Tests that need one of these set it themselves."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(root / "dcasenet_hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "huggingface"))
    monkeypatch.setenv("DCASENET_HUB_FEATURES", str(root / "features"))
    for name in _MACHINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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
