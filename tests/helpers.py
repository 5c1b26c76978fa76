"""Helpers shared by the tests (imported as ``from helpers import ...``; no tests here).

* :class:`LoopbackServer` plays the official weights host (or a mirror) on 127.0.0.1: it serves bytes from memory,
  honours ``Range: bytes=N-`` (206), records every request, and can corrupt one byte, cut the connection after N
  bytes (once), or throttle, so that download, resume, hash-mismatch and concurrency paths run for real over HTTP.
  Its own checks are in tests/test_hub_server.py.
* :func:`responsive_model`: test weights whose outputs differ clearly between inputs.
* :func:`closed_port`: a loopback port nothing listens on (a host that refuses at once: "no network", fast).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "8232e2403c6385436404fd91b10e51d9e722bea6"
FIXTURE_PATH = "weights/Joint/weights/best_ASC.pt"
URL_PATH = f"/Jungjee/DcaseNet/raw/{COMMIT}/{FIXTURE_PATH}"

#: How often a served loop looks for ``shutdown()``: with the standard library's 0.5 s, stopping a server would wait
#: up to half a second in every test that uses one.
SHUTDOWN_POLL_S = 0.01


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_background(httpd) -> None:
    """``httpd.serve_forever`` in a daemon thread, checking for ``shutdown()`` every :data:`SHUTDOWN_POLL_S`."""
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True).start()


def git_blob_sha1(data: bytes) -> str:
    """Computed here independently of the package's own helper."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LoopbackServer:
    """``with LoopbackServer({"/path": b"..."}) as srv: srv.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, files: dict[str, bytes], *, chunk: int = 1 << 18, delay_s: float = 0.0) -> None:
        self.files = files
        self.chunk = chunk
        self.delay_s = delay_s
        self.corrupt = False
        self.cut_after: int | None = None  # close the connection after this many body bytes, once
        self.stall_s = 0.0  # with cut_after: wait this long (the client times out) before closing
        self.requests: list[dict[str, object]] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        serve_in_background(self._httpd)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def gets(self, path: str | None = None) -> list[dict[str, object]]:
        return [r for r in self.requests if path is None or r["path"] == path]

    # -- serving -----------------------------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append({"path": h.path, "range": rng})
            cut, self.cut_after = self.cut_after, None
        data = self.files.get(h.path)
        if data is None:
            h.send_error(404)
            return
        if self.corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        if start:
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        pos = start
        end = len(data) if cut is None else min(len(data), start + cut)
        try:
            while pos < end:
                n = min(self.chunk, end - pos)
                h.wfile.write(data[pos:pos + n])
                pos += n
                with self._lock:
                    self.bytes_sent += n
                if self.delay_s:
                    time.sleep(self.delay_s)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if cut is not None:
            time.sleep(self.stall_s)
            h.close_connection = True


def write_manifest(path: Path, entries: dict[str, dict]) -> Path:
    path.write_text(json.dumps({"schema_version": 1, "models": entries}, indent=2))
    return path


def fixture_entry(sha1: str, *, path: str = FIXTURE_PATH) -> dict:
    """A manifest entry pointing at the official URL form (served by the mirror) with the fixture's hash."""
    return {
        "description": "test entry: the deterministic fixture checkpoint (NOT pretrained)",
        "arch": "v3", "trained_tasks": ["scene", "tags", "events"], "trained_on": [],
        "sources": [{
            "type": "github", "repo": "Jungjee/DcaseNet", "commit": COMMIT, "path": path,
            "url": f"https://github.com/Jungjee/DcaseNet/raw/{COMMIT}/{path}", "git_blob_sha1": sha1,
        }],
        "license": "MIT", "citation": "@misc{test}", "metrics": None,
    }


def write_old_layout_entry(hf_cache: Path, model_id: str, revision: str, files: dict[str, bytes]) -> Path:
    """Lay out a converted official model as dcasenet-hub 0.1.0 (commit eeefb62) wrote it, written out here by hand
    so that the package's current code cannot change what "old" means: in the Hugging Face cache under the made-up
    owner ``dcasenet-hub``, blobs named by sha256 (weights, with its ``.verified`` record) or git blob SHA-1 (text),
    relative symlinks from ``snapshots/<revision>/``, ``refs/main`` without a newline, an empty lock file.

    Returns:
        The snapshot folder.
    """
    repo = hf_cache / f"models--dcasenet-hub--{model_id}"
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        if name == "model.safetensors":
            blob_name = hashlib.sha256(data).hexdigest()
        else:
            blob_name = git_blob_sha1(data)
        blob = repo / "blobs" / blob_name
        blob.write_bytes(data)
        if name == "model.safetensors":
            st = blob.stat()
            (repo / "blobs" / f"{blob_name}.verified").write_text(
                json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": blob_name}) + "\n")
        (snap / name).symlink_to(f"../../blobs/{blob_name}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    lock = hf_cache / ".locks" / repo.name / f"{revision}.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    return snap


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
