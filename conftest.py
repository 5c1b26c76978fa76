"""What every test of the repository runs in (``tests/`` and the benchmark harness's own test in ``benchmarks/``):
one torch thread count per pytest-xdist worker and an isolated environment."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (-n N) each worker gets an equal share of the cores, so N workers with torch's default
    # thread count do not oversubscribe the machine (OpenMP barriers then spin and everything slows down).
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Where the CPU has no native bf16, torch emulates bf16 convolutions about 13 times slower than fp32 (and the
    # faulty oneDNN kernel tests/test_bf16.py guards against does not exist): there the bf16 tests run in the
    # integration step, so the default suite stays quick on every CPU and CI still runs them everywhere.
    from dcasenet_hub.devices import native_cpu_bf16

    if native_cpu_bf16():
        return
    for item in items:
        if item.get_closest_marker("bf16") is not None:
            item.add_marker(pytest.mark.integration)


#: Variables of the machine that would change what a test sees: mirrors, endpoints, offline mode, a torchrun job.
_MACHINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "DCASENET_HUB_MIRROR", "DCASENET_HUB_DATA_MIRROR",
                      "DCASENET_HUB_MANIFEST", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory,
                          monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in the same environment, whatever the machine: its own empty caches (weights already
    downloaded there would change what the offline and download tests see) and none of the machine's mirrors,
    endpoints, offline mode or torchrun variables. Tests that need one of these set it themselves. The caches go
    with the test: weights downloaded into them would otherwise add up to gigabytes over a run."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(root / "dcasenet_hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "huggingface"))
    monkeypatch.setenv("DCASENET_HUB_FEATURES", str(root / "features"))
    for name in _MACHINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    shutil.rmtree(root, ignore_errors=True)
