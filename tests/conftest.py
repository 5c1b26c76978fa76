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


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the caches of the machine it runs on: weights already downloaded there would change
    what the offline and download tests see. Tests that need a particular cache set these variables themselves."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(root / "dcasenet_hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "huggingface"))


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


def _calibration_signals(sr: int = 24000, seconds: float = 5.0) -> dict:
    """Five different 5-s signals (noise, tone, speech-like bursts, chirp, clicks); seeded, float32."""
    import numpy as np

    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    sig = {
        "noise": 0.1 * rng.standard_normal(t.size),
        "tone3k": 0.3 * np.sin(2 * np.pi * 3000 * t),
        "bursts": 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.4),
        "chirp": 0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t),
        "clicks": (np.arange(t.size) % 4800 < 50) * 0.5 * rng.standard_normal(t.size),
    }
    return {k: v.astype(np.float32) for k, v in sig.items()}


def responsive_model(arch: str = "v3"):
    """Test weights whose outputs differ clearly between inputs (the fixture checkpoint's barely do).

    ``build_model(arch, seed=0)``; every batch-norm's running statistics set to the statistics of the five
    calibration signals (so each layer's activations are spread, not saturated or flat); the last linear layer of
    each head scaled so its outputs on those signals have standard deviation 2 (scene and tag logits, event
    pre-sigmoid). Made at test time in a fraction of a second; not pretrained, meaningless labels.
    """
    import torch

    from dcasenet_hub import build_model
    from dcasenet_hub.audio import log_mel

    model = build_model(arch, seed=0)
    mels = torch.stack([log_mel(torch.from_numpy(v)) for v in _calibration_signals().values()]).unsqueeze(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the running statistics become the batch's
    model.train()
    with torch.no_grad():
        model(mels)
    model.eval()
    heads = {"scene_logits": model.fc_ASC, "tag_logits": model.layer_TAG[-1], "event_probs": model.event_fc}
    with torch.no_grad():
        out = model(mels)
        for field, layer in heads.items():
            value = getattr(out, field)
            if field == "event_probs":
                value = torch.logit(value.clamp(1e-6, 1 - 1e-6))
            value = value - value.mean(dim=0, keepdim=True).mean(dim=-1, keepdim=True)
            scale = 2.0 / float(value.std())
            layer.weight.mul_(scale)
            if layer.bias is not None:
                layer.bias.mul_(scale)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model


@pytest.fixture(scope="session")
def responsive_v3():
    """v3 in eval mode with :func:`responsive_model` weights (shared: do not modify)."""
    return responsive_model("v3")
