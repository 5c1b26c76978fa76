"""Environment variables are read in one module (dcasenet_hub/_env.py), at call time, each parsed one way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcasenet_hub import _env

PACKAGE = Path(__file__).parents[1] / "dcasenet_hub"


def test_no_module_but_env_reads_the_environment() -> None:
    readers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "_env.py"
               and re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text(encoding="utf-8"))]
    assert readers == []


def test_hf_endpoint_is_parsed_one_way_for_downloads_and_uploads(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """The Hub probe before a download and the token check before an upload reach the same URL."""
    import dcasenet_hub
    from dcasenet_hub.errors import HubAccessError, OfflineError
    from dcasenet_hub.hub import api, fetch

    probed: list[str] = []

    def probe(url: str, **kwargs: object) -> None:
        probed.append(url)
        raise OfflineError("no network (test)")

    monkeypatch.setattr(fetch, "probe", probe)
    monkeypatch.setenv("HF_ENDPOINT", " http://127.0.0.1:9/ ")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OfflineError):
        dcasenet_hub.from_pretrained("some-org/some-model")
    with pytest.raises(HubAccessError, match=r"at http://127\.0\.0\.1:9 "):
        api.check_hub_access(token="hf_test_token")
    assert probed == ["http://127.0.0.1:9", "http://127.0.0.1:9"]
    monkeypatch.setenv("HF_ENDPOINT", "")
    assert _env.hf_endpoint() == "https://huggingface.co"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, None),  # no MASTER_ADDR: not started by torchrun
    ({"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "h"}, None),
    ({"WORLD_SIZE": "4", "RANK": "x", "MASTER_ADDR": "h"}, None),
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}, (2, 4, 1)),
])
def test_one_torchrun_detection(env: dict[str, str], expected: tuple[int, int, int] | None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _env.torchrun() == expected
