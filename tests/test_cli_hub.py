"""``dcasenet-hub list | download | verify | convert | push`` through the real CLI entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    URL_PATH,
    LoopbackServer,
    closed_port,
    fixture_entry,
    git_blob_sha1,
    serve_in_background,
    write_manifest,
    write_old_layout_entry,
)

from dcasenet_hub.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package cache (returned) and the Hugging Face cache ``tmp_path / "hf-cache"``, both empty."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("HF_HUB_OFFLINE", "DCASENET_HUB_MIRROR", "DCASENET_HUB_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.mark.parametrize("command", ["list", "download", "cache", "verify", "convert", "push"])
def test_help_shows_an_example(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", command, "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "example:" in out.stdout and f"dcasenet-hub {command}" in out.stdout


def test_list_shows_ids_arch_params_source_cached(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "ARCH", "PARAMS", "SOURCE", "CACHED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["dcasenet-v3-joint-asc"] == ["dcasenet-v3-joint-asc", "v3", "13.88M", "Jungjee/DcaseNet", "no"]
    assert rows["dcasenet-v3"][3:] == ["=", "dcasenet-v3-joint-asc", "no"]
    assert rows["dcasenet-v1"][3:] == ["not", "published", "-"]
    assert main(["list", "--pretrained"]) == 0
    assert "dcasenet-v2" not in capsys.readouterr().out


def test_download_verify_and_damage(env: Path, authors_checkpoint: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = authors_checkpoint.read_bytes()
    manifest = write_manifest(tmp_path / "m.json", {"fixture-v3": fixture_entry(git_blob_sha1(data))})
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(manifest))
    with LoopbackServer({URL_PATH: data}) as srv:
        monkeypatch.setenv("DCASENET_HUB_MIRROR", srv.url)
        assert main(["download", "fixture-v3", "dcasenet-v1", "--quiet"]) == 3  # v1: never published
        out, err = capsys.readouterr()
        assert "never released" in err
        mid, folder = out.strip().split("\t")
        assert mid == "fixture-v3" and (Path(folder) / "model.safetensors").is_file()
    assert main(["list"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("fixture-v3")] == [
        "yes"]
    assert main(["verify"]) == 0
    assert "3 of 3 cached files OK" in capsys.readouterr().out
    blob = (Path(folder) / "model.safetensors").resolve()
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0x01
    blob.write_bytes(bytes(raw))
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED {blob}: expected {blob.name}, got " in out and "2 of 3 cached files OK" in out
    assert f"OK in {env} and {tmp_path / 'hf-cache'}" in out  # both caches are covered
    # a snapshot that lost a file loading reads is damaged too (it was "OK": only the files there were checked)
    blob.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 0x01]))
    (Path(folder) / "model.safetensors").unlink()
    assert main(["verify"]) == 1
    assert f"DAMAGED {Path(folder) / 'model.safetensors'}: expected a snapshot file, got missing" in (
        capsys.readouterr().out)


def test_cache_lists_both_caches_and_old_layout_entries(env: Path, tmp_path: Path, authors_checkpoint: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """If `cache` (or `list`) looked at the package cache only, the old-layout entry would be missing from both."""
    data = authors_checkpoint.read_bytes()
    sha1 = git_blob_sha1(data)
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(write_manifest(tmp_path / "m.json",
                                                                   {"fixture-v3": fixture_entry(sha1)})))
    assert main(["convert", str(authors_checkpoint), "-o", str(tmp_path / "conv")]) == 0
    files = {n: (tmp_path / "conv" / n).read_bytes() for n in ("config.json", "model.safetensors", "README.md")}
    old = write_old_layout_entry(tmp_path / "hf-cache", "fixture-v3", sha1, files)
    capsys.readouterr()
    assert main(["cache"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(str(env)) and lines[1].endswith(str(tmp_path / "hf-cache"))
    assert lines[2].split("\t") == ["fixture-v3", f"{sum(len(b) for b in files.values()) / 1e6:.1f} MB", str(old),
                                    "(old layout)"]
    assert main(["list"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("fixture-v3")] == [
        "yes"]


def test_convert_then_push(env: Path, authors_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "converted"
    assert main(["convert", str(authors_checkpoint), "--arch", "v3", "-o", str(out_dir)]) == 0
    assert "13,882,920 parameters" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    from huggingface_hub import HfApi

    uploaded: dict[str, object] = {}

    class _Info:
        commit_url = "https://huggingface.co/org/name/commit/1"
        pr_url = None

    def upload_folder(self, *, repo_id, folder_path, **kw):  # noqa: ANN001
        uploaded["repo_id"] = repo_id
        uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        uploaded["same_weights"] = (Path(folder_path) / "model.safetensors").read_bytes() == (
            out_dir / "model.safetensors").read_bytes()
        return _Info()

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with _WhoamiServer(200) as hub_srv:  # the token check runs for real against a loopback "Hub"
        monkeypatch.setenv("HF_ENDPOINT", hub_srv.url)
        assert main(["push", str(out_dir), "--repo-id", "org/name"]) == 0
    assert hub_srv.auth == ["Bearer hf_test_token"]
    assert capsys.readouterr().out.strip() == _Info.commit_url
    assert uploaded == {"repo_id": "org/name", "files": ["README.md", "config.json", "model.safetensors"],
                        "same_weights": True}
    assert main(["push", str(tmp_path / "missing"), "--repo-id", "org/name"]) == 2
    shutil.rmtree(out_dir)


class _WhoamiServer:
    """A loopback stand-in for the Hub's ``/api/whoami-v2``: answers ``status`` and records the Authorization."""

    def __init__(self, status: int) -> None:
        import http.server

        self.auth: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.auth.append(self.headers.get("Authorization"))
                body = (b'{"type": "user", "name": "tester", "auth": {}}' if status == 200
                        else b'{"error": "Invalid credentials in Authorization header"}')
                self.send_response(status if self.path.startswith("/api/whoami") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        serve_in_background(self.httpd)

    def __enter__(self) -> _WhoamiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def converted_folder(authors_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture checkpoint converted once for the push failures: a push that fails only reads the folder."""
    folder = tmp_path_factory.mktemp("push") / "model"
    assert main(["convert", str(authors_checkpoint), "-o", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("case", ["no token", "no network", "token rejected"])
def test_push_without_token_or_network_fails_with_one_line(case: str, converted_folder: Path,
                                                           tmp_path: Path) -> None:
    import os

    folder = converted_folder
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",  # no saved login there
               HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    if case != "no token":
        env["HF_TOKEN"] = "hf_test_token"
    srv = _WhoamiServer(401) if case == "token rejected" else None
    if srv is not None:
        env["HF_ENDPOINT"] = srv.url
    try:
        out = subprocess.run([sys.executable, "-m", "dcasenet_hub.cli", "push", str(folder), "--repo-id", "org/name"],
                             capture_output=True, text=True, timeout=120, env=env)
    finally:
        if srv is not None:
            srv.__exit__()
    assert out.returncode == 3, out.stderr  # the Hub could not be reached or written (README's exit codes)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    expected = {"no token": ("huggingface-cli login", "HF_TOKEN"), "no network": ("Cannot reach", "HF_ENDPOINT"),
                "token rejected": ("rejected the token", "huggingface-cli login")}[case]
    assert all(e in out.stderr for e in expected), out.stderr


def test_convert_records_the_stated_tasks_an_unknown_license_and_keeps_an_existing_model(
        env: Path, authors_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "conv"
    assert main(["convert", str(authors_checkpoint), "--tasks", "scene", "tags", "events", "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["trained_tasks"] == ["scene", "tags", "events"]
    assert "unknown" not in config["provenance"] and "scene, tags, events" in config["provenance"]
    card = (out / "README.md").read_text()
    assert "license: unknown" in card and "mit" not in card.split("---")[1].lower()  # the source states none
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["convert", str(authors_checkpoint), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a model" in err and "--overwrite" in err and err.count("\n") == 1, err
    assert (out / "model.safetensors").read_bytes() == before
    assert json.loads((out / "config.json").read_text())["trained_tasks"] == ["scene", "tags", "events"]
    assert main(["convert", str(authors_checkpoint), "-o", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["trained_tasks"] == []


@pytest.mark.parametrize("case", ["unknown id", "offline", "no network"])
def test_download_failures_exit_with_the_model_code_like_embed(case: str, env: Path, authors_checkpoint: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``download`` of an unknown id, offline or without network exits 3, as ``embed --model nope`` does."""
    manifest = write_manifest(tmp_path / "m.json",
                              {"fixture-v3": fixture_entry(git_blob_sha1(authors_checkpoint.read_bytes()))})
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(manifest))
    monkeypatch.setenv("DCASENET_HUB_MIRROR", f"http://127.0.0.1:{closed_port()}")
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nope" if case == "unknown id" else "fixture-v3"
    assert main(["download", name, "--quiet"]) == 3
    err = capsys.readouterr().err
    # named by the command, as every other error, then the id it is about
    assert err.startswith(f"dcasenet-hub download: error: {name}: ") and "Traceback" not in err
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(24000, np.float32), 24000)
    assert main(["embed", str(tmp_path / "a.wav"), "--model", name, "-o", str(tmp_path / "o"), "-q"]) == 3
