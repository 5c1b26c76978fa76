"""from_pretrained(<manifest id>) over real HTTP: a loopback server plays the official host through
DCASENET_HUB_MIRROR, a test manifest (DCASENET_HUB_MANIFEST) holds the fixture checkpoint's git blob SHA-1.

The fixture checkpoint has deterministic test weights, not pretrained ones; it stands in for an official file.
"""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    COMMIT,
    FIXTURE_PATH,
    URL_PATH,
    LoopbackServer,
    closed_port,
    fixture_entry,
    git_blob_sha1,
    serve_in_background,
    write_manifest,
    write_old_layout_entry,
)

import dcasenet_hub
from dcasenet_hub.hub import api as hub
from dcasenet_hub.hub import sources


@pytest.fixture(scope="module")
def fixture_bytes(authors_checkpoint: Path) -> bytes:
    return authors_checkpoint.read_bytes()


@pytest.fixture(scope="module")
def fixture_sha1(fixture_bytes: bytes) -> str:
    return git_blob_sha1(fixture_bytes)


@pytest.fixture
def server(fixture_bytes: bytes):
    with LoopbackServer({URL_PATH: fixture_bytes}) as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer, fixture_sha1: str) -> Path:
    """Fresh caches (the package cache is returned; the Hugging Face cache is ``tmp_path / "hf-cache"``), the mirror
    pointing at the loopback server, and a manifest with id 'fixture-v3'."""
    cache = tmp_path / "cache"
    manifest = write_manifest(tmp_path / "manifest.json", {"fixture-v3": fixture_entry(fixture_sha1)})
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("DCASENET_HUB_MIRROR", server.url)
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(manifest))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def _outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(2, 1, 128, 120, generator=g)
    with torch.no_grad():
        out = model(mel, tasks=("scene", "tags", "events"))
    return {"scene": out.scene_logits, "tags": out.tag_logits, "events": out.event_probs}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_download_verify_convert_and_cache_layout(env: Path, server: LoopbackServer, fixture_sha1: str,
                                                  v3_model: torch.nn.Module) -> None:
    model = dcasenet_hub.from_pretrained("fixture-v3")
    assert len(server.gets(URL_PATH)) == 1 and server.gets(URL_PATH)[0]["range"] is None
    # same numbers as the checkpoint loaded directly
    expected = _outputs(v3_model)
    for k, v in _outputs(model).items():
        assert torch.equal(v, expected[k]), k
    cfg = model.config
    assert cfg.arch == "v3" and cfg.model_id == "fixture-v3" and cfg.trained_tasks == ("scene", "tags", "events")
    assert cfg.provenance == (f"authors' checkpoint {FIXTURE_PATH}@{COMMIT} (git blob sha1 {fixture_sha1}), "
                              "converted to safetensors by dcasenet-hub")
    assert not model.training
    # huggingface_hub's inner layout in the package cache: refs/main -> snapshot named by the source's blob SHA-1,
    # files linked to blobs
    repo = env / "models" / "fixture-v3"
    assert (repo / "refs" / "main").read_text() == fixture_sha1
    snap = repo / "snapshots" / fixture_sha1
    assert sorted(p.name for p in snap.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for f in snap.iterdir():
        assert f.is_symlink() and f.resolve().parent == (repo / "blobs").resolve()
    assert not list(repo.rglob("*.incomplete"))
    assert sorted(p.name for p in repo.iterdir()) == ["blobs", "refs", "snapshots"]  # no temporary leftovers
    # the blobs are named by their hashes (sha256 for weights, git sha1 for text), so verify_cache can re-check them
    checks = hub.verify_cache()
    assert len(checks) == 3 and all(c.ok for c in checks)
    assert hub.model_info("fixture-v3").cached == snap
    assert sorted(p.name for p in env.iterdir()) == [".locks", "models"]


def test_official_download_lands_in_the_package_cache_not_the_hf_cache(
        env: Path, tmp_path: Path, server: LoopbackServer, fixture_sha1: str) -> None:
    """Broken variant caught: official downloads stored in the Hugging Face cache (under a made-up repo id) would
    leave files there and scan-cache would list 'dcasenet-hub/fixture-v3'."""
    from huggingface_hub import scan_cache_dir

    hf_cache = tmp_path / "hf-cache"
    hf_cache.mkdir()
    folder = hub.download("fixture-v3", progress=False)
    assert folder == env / "models" / "fixture-v3" / "snapshots" / fixture_sha1
    assert list(hf_cache.iterdir()) == []
    assert scan_cache_dir(hf_cache).repos == frozenset()
    assert hub.cache_dir_location() == env and hub.hf_cache_location() == hf_cache
    # cache_dir= still overrides the environment
    other = tmp_path / "other"
    assert hub.download("fixture-v3", cache_dir=other, progress=False).is_relative_to(other / "models")


@pytest.mark.parametrize("source", ["official download", "authors' .pt file", "converted folder"])
def test_loading_weights_leaves_the_callers_random_stream_alone(source: str, env: Path,
                                                                 authors_checkpoint: Path) -> None:
    """A load builds the network on the meta device and takes the stored tensors: no random initialisation runs, so
    the caller's seeded random stream gives the same numbers after a load as without it.

    Broken variant caught: building ``cls(config)`` on the CPU before loading (any of the three ways in) draws the
    initial weights from that stream, and the next ``torch.rand`` differs.
    """
    name = {"official download": "fixture-v3", "authors' .pt file": str(authors_checkpoint),
            "converted folder": None}[source]
    if name is None:
        name = str(hub.download("fixture-v3", progress=False))  # downloaded before the stream is seeded
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    model = dcasenet_hub.from_pretrained(name)
    assert torch.equal(torch.rand(4), expected)
    assert not any(t.is_meta for t in model.state_dict().values())


def test_second_load_uses_cache_with_server_stopped(env: Path, server: LoopbackServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = dcasenet_hub.from_pretrained("fixture-v3")
    server.stop()
    t = time.perf_counter()
    second = dcasenet_hub.from_pretrained("fixture-v3")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    third = dcasenet_hub.from_pretrained("fixture-v3", local_files_only=True)
    assert time.perf_counter() - t < 10
    for m in (second, third):
        for a, b in zip(first.state_dict().values(), m.state_dict().values()):
            assert torch.equal(a, b)
    assert len(server.requests) == 1


def test_corrupted_byte_leaves_nothing_and_names_both_hashes(env: Path, server: LoopbackServer,
                                                             fixture_bytes: bytes, fixture_sha1: str) -> None:
    server.corrupt = True
    mid = len(fixture_bytes) // 2
    bad = fixture_bytes[:mid] + bytes([fixture_bytes[mid] ^ 0xFF]) + fixture_bytes[mid + 1:]
    with pytest.raises(hub.ChecksumMismatchError) as err:
        dcasenet_hub.from_pretrained("fixture-v3")
    msg = str(err.value)
    assert f"git blob SHA-1 mismatch: expected {fixture_sha1}, got {git_blob_sha1(bad)}" in msg
    # nothing in the cache but the (empty) lock file huggingface_hub-style caches keep in .locks/
    assert [f for f in _files(env) if not f.startswith(".locks/")] == []
    assert not (env / "models" / "fixture-v3").exists()
    # and a good server afterwards works
    server.corrupt = False
    assert dcasenet_hub.from_pretrained("fixture-v3").config.model_id == "fixture-v3"


def test_connection_cut_mid_file_resumes(env: Path, server: LoopbackServer, fixture_bytes: bytes,
                                         v3_model: torch.nn.Module) -> None:
    cut = 20_000_000
    server.cut_after = cut
    model = dcasenet_hub.from_pretrained("fixture-v3")
    reqs = server.gets(URL_PATH)
    assert len(reqs) == 2 and reqs[0]["range"] is None
    resumed_from = int(str(reqs[1]["range"]).removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_from <= cut
    assert server.bytes_sent < len(fixture_bytes) + cut  # not downloaded twice
    for a, b in zip(v3_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_server_that_stalls_mid_file_keeps_what_it_sent_and_is_resumed(tmp_path: Path) -> None:
    """300 KB of a 3 MB file, then the server stalls past the timeout: those bytes are kept and counted as received,
    so the next attempt resumes from them and the file completes.

    Broken variant caught: reading 1 MiB blocks waited for a whole block, so the stall lost the 300 KB and the
    attempt counted as "sent nothing": "no network (... or it sent nothing)" and no retry.
    """
    import hashlib

    from dcasenet_hub.hub import fetch

    data = os.urandom(3_000_000)
    with LoopbackServer({"/f.bin": data}) as srv:
        srv.cut_after, srv.stall_s = 300_000, 1.5
        part = tmp_path / "f.part"
        fetch.download(srv.url + "/f.bin", part, digest=hashlib.sha256(data).hexdigest(), algorithm="sha256",
                       size=len(data), timeout=0.5, progress=False)
        assert part.read_bytes() == data
        assert [r["range"] for r in srv.gets("/f.bin")] == [None, "bytes=300000-"]


def test_partial_file_from_an_earlier_run_is_resumed(env: Path, server: LoopbackServer, fixture_bytes: bytes,
                                                     fixture_sha1: str) -> None:
    partial = env / "models" / "fixture-v3" / "blobs" / f"{fixture_sha1}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(fixture_bytes[:10_000_000])
    dcasenet_hub.from_pretrained("fixture-v3")
    assert [r["range"] for r in server.gets(URL_PATH)] == ["bytes=10000000-"]
    assert server.bytes_sent == len(fixture_bytes) - 10_000_000
    assert not partial.exists()


def test_stale_partial_file_with_wrong_bytes_is_downloaded_again(env: Path, server: LoopbackServer,
                                                                  fixture_bytes: bytes, fixture_sha1: str) -> None:
    partial = env / "models" / "fixture-v3" / "blobs" / f"{fixture_sha1}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1_000_000)  # e.g. the start of another version of the file
    dcasenet_hub.from_pretrained("fixture-v3")
    assert [r["range"] for r in server.gets(URL_PATH)] == ["bytes=1000000-", None]
    assert not partial.exists()


_CHILD = textwrap.dedent("""
    import sys, time, pathlib
    import torch
    torch.set_num_threads(1)
    import dcasenet_hub
    from dcasenet_hub.hub import api as hub
    from dcasenet_hub.models import dcasenet as models
    from dcasenet_hub.hub import fetch as _download  # import everything before the start line
    import safetensors.torch, filelock, tqdm.auto
    barrier, me = pathlib.Path(sys.argv[1]), sys.argv[2]
    (barrier / me).touch()
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.005)
    model = dcasenet_hub.from_pretrained("fixture-v3")
    print(model.config.model_id, repr(sum(float(p.double().sum()) for p in model.parameters())))
""")


@pytest.mark.integration
def test_two_processes_download_once_and_both_succeed(env: Path, server: LoopbackServer, tmp_path: Path) -> None:
    server.delay_s = 0.01  # ~2 s transfer, so both processes are inside from_pretrained at the same time
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(barrier), str(i)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert outs[0][0] == outs[1][0] and outs[0][0].startswith("fixture-v3 ")
    assert len(server.gets(URL_PATH)) == 1  # one download: the second process waited on the lock



def test_offline_and_no_network_fail_fast_with_fixes(env: Path, server: LoopbackServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: read at call time
    t = time.perf_counter()
    with pytest.raises(hub.OfflineError) as err:
        dcasenet_hub.from_pretrained("fixture-v3")
    assert time.perf_counter() - t < 10
    msg = str(err.value)
    for needle in ("HF_HUB_OFFLINE=1", "dcasenet-hub download fixture-v3", "DCASENET_HUB_MIRROR", "copy",
                   "from_pretrained('/path/to"):
        assert needle in msg, needle
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(hub.OfflineError, match="local_files_only=True"):
        dcasenet_hub.from_pretrained("fixture-v3", local_files_only=True)
    assert server.requests == []
    # no network: the mirror (or the official host) does not answer
    monkeypatch.setenv("DCASENET_HUB_MIRROR", f"http://127.0.0.1:{closed_port()}")
    t = time.perf_counter()
    with pytest.raises(hub.OfflineError, match="no network") as err:
        dcasenet_hub.from_pretrained("fixture-v3")
    assert time.perf_counter() - t < 10
    assert "DCASENET_HUB_MIRROR" in str(err.value) and "DCASENET_HUB_CACHE" in str(err.value)
    assert not (env / "models" / "fixture-v3").exists()


def test_manifest_override_serves_the_default_alias(env: Path, server: LoopbackServer, fixture_sha1: str,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DCASENET_HUB_MANIFEST replaces an official entry: an air-gapped site can re-point dcasenet-v3's target."""
    manifest = write_manifest(tmp_path / "override.json", {"dcasenet-v3-joint-asc": fixture_entry(fixture_sha1)})
    monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(manifest))
    model = dcasenet_hub.DcaseNet.from_pretrained("dcasenet-v3", dtype="float64")
    assert model.config.model_id == "dcasenet-v3-joint-asc"
    assert next(model.parameters()).dtype == torch.float64
    assert len(server.gets(URL_PATH)) == 1  # the official path, on the mirror
    assert (env / "models" / "dcasenet-v3-joint-asc" / "snapshots" / fixture_sha1).is_dir()


def _flip_cached_weights_byte(cache: Path, sha1: str) -> Path:
    weights = cache / "models" / "fixture-v3" / "snapshots" / sha1 / "model.safetensors"
    blob = weights.resolve()
    with open(blob, "r+b") as f:  # same size: only the content (and the mtime) changes
        f.seek(blob.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    return blob


def test_damaged_cached_weights_are_noticed_on_load_and_fetched_again(
        env: Path, server: LoopbackServer, fixture_sha1: str, v3_model: torch.nn.Module,
        caplog: pytest.LogCaptureFixture) -> None:
    dcasenet_hub.from_pretrained("fixture-v3")
    blob = _flip_cached_weights_byte(env, fixture_sha1)
    good_name = blob.name
    with caplog.at_level("WARNING", logger="dcasenet_hub.hub.api"):
        model = dcasenet_hub.from_pretrained("fixture-v3")
    assert "is damaged" in caplog.text and good_name in caplog.text
    assert len(server.gets(URL_PATH)) == 2  # fetched again
    expected = _outputs(v3_model)
    for k, v in _outputs(model).items():
        assert torch.equal(v, expected[k]), k
    assert all(c.ok for c in hub.verify_cache())
    # a cache written before the verification records existed (no sidecar) is hashed in full too
    (blob.with_name(blob.name + hub.VERIFIED_SUFFIX)).unlink()
    _flip_cached_weights_byte(env, fixture_sha1)
    dcasenet_hub.from_pretrained("fixture-v3")
    assert len(server.gets(URL_PATH)) == 3


def test_damaged_cached_weights_without_network_fail_with_one_line_naming_the_fix(
        env: Path, server: LoopbackServer, fixture_sha1: str) -> None:
    dcasenet_hub.from_pretrained("fixture-v3")
    _flip_cached_weights_byte(env, fixture_sha1)
    server.stop()
    with pytest.raises(hub.ChecksumMismatchError) as ei:
        dcasenet_hub.from_pretrained("fixture-v3")
    msg = str(ei.value)
    assert "\n" not in msg and "is damaged" in msg and "dcasenet-hub download fixture-v3" in msg


def test_unchanged_cached_weights_are_not_rehashed(env: Path, server: LoopbackServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dcasenet_hub import _io
    from dcasenet_hub.hub import fetch

    monkeypatch.setattr(_io, "RACY_NS", 0)  # as when the download is older than a timestamp tick
    dcasenet_hub.from_pretrained("fixture-v3")
    calls: list[Path] = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: calls.append(p) or real(p))
    dcasenet_hub.from_pretrained("fixture-v3")
    assert calls == []  # the stat stamp matches the record: no full hash


def test_cached_weights_changed_under_the_same_size_and_mtime_are_noticed(
        env: Path, server: LoopbackServer, fixture_sha1: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached blob rewritten with other bytes and its old mtime (as ``cp -p`` or ``rsync -t`` would leave it) is
    hashed on load, found damaged and fetched again.

    Broken variant caught: the record's size and mtime vouched for the content, so the changed weights loaded.
    """
    from dcasenet_hub import _io

    monkeypatch.setattr(_io, "RACY_NS", 0)
    dcasenet_hub.from_pretrained("fixture-v3")
    blob = (env / "models" / "fixture-v3" / "snapshots" / fixture_sha1 / "model.safetensors").resolve()
    st = blob.stat()
    _flip_cached_weights_byte(env, fixture_sha1)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert blob.stat().st_size == st.st_size and blob.stat().st_mtime_ns == st.st_mtime_ns
    dcasenet_hub.from_pretrained("fixture-v3")
    assert len(server.gets(URL_PATH)) == 2  # noticed and fetched again


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200, no Content-Length, and a body that never ends (until the client hangs up)."""

    sent = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        block = b"\0" * (1 << 16)
        try:
            while type(self).sent < 1 << 29:  # 512 MiB: a safety stop for the test itself only
                self.wfile.write(block)
                type(self).sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_endless_weights_response_stops_at_the_manifest_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fixture_bytes: bytes, fixture_sha1: str) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    httpd.daemon_threads = True
    serve_in_background(httpd)
    try:
        entry = fixture_entry(fixture_sha1)
        entry["sources"][0]["size"] = len(fixture_bytes)
        cache = tmp_path / "cache"
        monkeypatch.setenv("DCASENET_HUB_CACHE", str(cache))
        monkeypatch.setenv("DCASENET_HUB_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setenv("DCASENET_HUB_MANIFEST", str(write_manifest(tmp_path / "m.json", {"fixture-v3": entry})))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        with pytest.raises(hub.ChecksumMismatchError) as ei:
            hub.download("fixture-v3", progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    msg = str(ei.value)
    assert f"more than the {len(fixture_bytes)} bytes" in msg and "DCASENET_HUB_MANIFEST" in msg
    assert _EndlessHandler.sent < len(fixture_bytes) + (64 << 20)  # stopped near the bound, not at the 512 MiB stop
    assert not (cache / "models" / "fixture-v3").exists()  # the partial file is gone


def test_weights_bound_without_manifest_size_comes_from_the_architecture(fixture_bytes: bytes,
                                                                         fixture_sha1: str) -> None:
    entry = fixture_entry(fixture_sha1)
    bound = sources.max_download_bytes(entry, entry["sources"][0])
    assert len(fixture_bytes) < bound < 3 * len(fixture_bytes)
    assert sources.max_download_bytes(entry, {**entry["sources"][0], "size": 123}) == 123


# -- caches written by dcasenet-hub 0.1.0: official conversions inside the Hugging Face cache -----------------------


@pytest.fixture(scope="module")
def converted_files(tmp_path_factory: pytest.TempPathFactory, fixture_bytes: bytes,
                    fixture_sha1: str) -> dict[str, bytes]:
    """The files of a converted fixture-v3, from one real download (the same bytes every time: the conversion is
    deterministic), shared by the old-layout tests so that each does not download and convert again."""
    scratch = tmp_path_factory.mktemp("converted")
    manifest = write_manifest(scratch / "manifest.json", {"fixture-v3": fixture_entry(fixture_sha1)})
    with LoopbackServer({URL_PATH: fixture_bytes}) as srv, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DCASENET_HUB_MIRROR", srv.url)
        mp.setenv("DCASENET_HUB_MANIFEST", str(manifest))
        mp.setenv("HF_HUB_CACHE", str(scratch / "hf-cache"))
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        folder = hub.download("fixture-v3", cache_dir=scratch / "cache", progress=False)
        return {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors", "README.md")}


def _old_entry(tmp_path: Path, fixture_sha1: str, files: dict[str, bytes]) -> Path:
    """A converted fixture-v3 laid out as release 0.1.0 left it in the HF cache (bytes from a real download)."""
    return write_old_layout_entry(tmp_path / "hf-cache", "fixture-v3", fixture_sha1, files)


def _migrations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Migrated cached")]


def test_old_layout_entry_is_used_offline_and_migrated_once(
        env: Path, tmp_path: Path, server: LoopbackServer, fixture_sha1: str, converted_files: dict[str, bytes],
        v3_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """(b) If the lookup ignored the old location, the offline load raises OfflineError; if the entry were copied
    but not moved, or migrated again on every call, the folder-gone or the second-call-logs-nothing checks fail;
    if the log line did not name both paths, the first check fails."""
    old = _old_entry(tmp_path, fixture_sha1, converted_files)
    gets = len(server.gets(URL_PATH))
    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.model_info("fixture-v3").cached == old  # listed as cached before it is moved
    new = env / "models" / "fixture-v3" / "snapshots" / fixture_sha1
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"):
        model = dcasenet_hub.from_pretrained("fixture-v3")
    lines = _migrations(caplog)
    assert len(lines) == 1 and str(old) in lines[0] and str(new) in lines[0] and "moved" in lines[0]
    expected = _outputs(v3_model)
    for k, v in _outputs(model).items():
        assert torch.equal(v, expected[k]), k
    hf_cache = tmp_path / "hf-cache"
    assert not (hf_cache / "models--dcasenet-hub--fixture-v3").exists()
    assert not (hf_cache / ".locks" / "models--dcasenet-hub--fixture-v3").exists()
    assert sorted(p.name for p in new.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert all(f.is_symlink() for f in new.iterdir()) and (env / "models" / "fixture-v3" / "refs" / "main").is_file()
    checks = hub.verify_cache()
    assert len(checks) == 3 and all(c.ok for c in checks) and all(c.path.is_relative_to(env) for c in checks)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"):
        again = dcasenet_hub.from_pretrained("fixture-v3")
    assert _migrations(caplog) == [] and hub.model_info("fixture-v3").cached == new
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert len(server.gets(URL_PATH)) == gets  # never asked the network


def _damage(path: Path) -> None:
    """Flip one byte in the middle of ``path`` and put its mtime back: size and mtime_ns stay as recorded."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("damaged", ["model.safetensors", "config.json"])
def test_damaged_old_layout_entry_is_not_migrated_as_good(
        damaged: str, env: Path, tmp_path: Path, server: LoopbackServer, fixture_sha1: str,
        converted_files: dict[str, bytes], v3_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """(c) If the migration skipped hash verification, or trusted the old .verified record (size + mtime_ns, both
    kept here), or checked the weights only, the damaged entry would be moved and loaded (or fail to parse)
    instead of raising ChecksumMismatchError; the fresh download afterwards must then not be skipped."""
    old = _old_entry(tmp_path, fixture_sha1, converted_files)
    _damage((old / damaged).resolve())
    gets = len(server.gets(URL_PATH))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"), pytest.raises(hub.ChecksumMismatchError) as ei:
        dcasenet_hub.from_pretrained("fixture-v3")
    msg = str(ei.value)
    assert "\n" not in msg and "is damaged" in msg and damaged in msg and "dcasenet-hub download fixture-v3" in msg
    assert _migrations(caplog) == [] and "not migrated" in caplog.text
    assert not (env / "models" / "fixture-v3" / "snapshots").exists()
    assert not (tmp_path / "hf-cache" / "models--dcasenet-hub--fixture-v3").exists()  # removed, not kept as good
    monkeypatch.delenv("HF_HUB_OFFLINE")
    model = dcasenet_hub.from_pretrained("fixture-v3")  # online: fetched again
    assert len(server.gets(URL_PATH)) == gets + 1
    expected = _outputs(v3_model)
    for k, v in _outputs(model).items():
        assert torch.equal(v, expected[k]), k


def test_old_layout_entry_is_read_in_place_when_the_package_cache_cannot_be_written(
        tmp_path: Path, server: LoopbackServer, fixture_sha1: str, converted_files: dict[str, bytes], env: Path,
        v3_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """(d) If an unwritable package cache made the old entry unusable (OfflineError, or an OSError from creating
    the lock), the offline load fails; if it were removed without a copy, the old folder would be gone."""
    old = _old_entry(tmp_path, fixture_sha1, converted_files)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the package cache's parent should be")
    monkeypatch.setenv("DCASENET_HUB_CACHE", str(blocker / "cache"))  # mkdir fails, as on a read-only disk
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="dcasenet_hub"):
        model = dcasenet_hub.from_pretrained("fixture-v3")
    assert "reading it in place" in caplog.text and _migrations(caplog) == []
    assert _same(model, v3_model) and old.is_dir() and hub.model_info("fixture-v3").cached == old


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_verify_cache_covers_old_layout_entries_not_yet_migrated(
        env: Path, tmp_path: Path, server: LoopbackServer, fixture_sha1: str,
        converted_files: dict[str, bytes]) -> None:
    """If verify_cache looked at the package cache only, the damaged old blob would not be reported."""
    old = _old_entry(tmp_path, fixture_sha1, converted_files)
    hub.download("fixture-v3", cache_dir=tmp_path / "elsewhere", progress=False)  # not the default caches
    assert [c.ok for c in hub.verify_cache()] == [True] * 3
    blob = (old / "model.safetensors").resolve()
    _damage(blob)
    bad = [c for c in hub.verify_cache() if not c.ok]
    assert [c.path for c in bad] == [blob] and bad[0].expected == blob.name


def _swap_cached_scene_labels(cache: Path, sha1: str) -> Path:
    """Swap the first two scene labels in the cached config.json (its blob: the name stays, the content changes)."""
    import json

    blob = (cache / "models" / "fixture-v3" / "snapshots" / sha1 / "config.json").resolve()
    cfg = json.loads(blob.read_text())
    cfg["scene_labels"][0], cfg["scene_labels"][1] = cfg["scene_labels"][1], cfg["scene_labels"][0]
    blob.write_text(json.dumps(cfg, indent=2) + "\n")
    return blob


def test_changed_cached_config_is_noticed_on_load_and_fetched_again(
        env: Path, server: LoopbackServer, fixture_sha1: str, caplog: pytest.LogCaptureFixture) -> None:
    """A cached config.json changed on disk (swapped scene labels) is damaged on load, as `verify` says; before,
    loading used it and gave the wrong top scene with status ok."""
    good = dcasenet_hub.from_pretrained("fixture-v3").config.scene_labels
    _swap_cached_scene_labels(env, fixture_sha1)
    assert not all(c.ok for c in hub.verify_cache())
    with caplog.at_level("WARNING", logger="dcasenet_hub.hub.api"):
        model = dcasenet_hub.from_pretrained("fixture-v3")
    assert "config.json is damaged" in caplog.text
    assert model.config.scene_labels == good and len(server.gets(URL_PATH)) == 2  # fetched again
    assert all(c.ok for c in hub.verify_cache())
    _swap_cached_scene_labels(env, fixture_sha1)
    server.stop()
    with pytest.raises(hub.ChecksumMismatchError) as ei:
        dcasenet_hub.from_pretrained("fixture-v3")
    msg = str(ei.value)
    assert "\n" not in msg and "config.json is damaged" in msg and "dcasenet-hub download fixture-v3" in msg
