"""HTTP download of official checkpoints: streamed, resumable, hashed as it goes, with short network timeouts.

Private helpers of :mod:`dcasenet_hub.hub`. Only the standard library is used for HTTP (``urllib``), so proxies set
with ``HTTPS_PROXY``/``HTTP_PROXY`` apply. No code from a download is ever executed here: bytes go to a file and a
hash.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

#: Seconds allowed for name resolution plus TCP connect, and for any silence while reading.
CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 30.0
#: Attempts of one download when the connection breaks after some bytes arrived (each resumes the partial file).
MAX_ATTEMPTS = 5
CHUNK = 1 << 20

_TRUE = {"1", "true", "yes", "on"}


class NetworkUnavailableError(OSError):
    """The host could not be reached (no network, DNS failure, refused or timed-out connection)."""


class ChecksumMismatchError(OSError):
    """A downloaded file does not have the hash the manifest promises."""


def env_flag(name: str) -> bool:
    """True when environment variable ``name`` is set to 1/true/yes/on (read now, at call time)."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as set at call time (huggingface_hub itself reads it only once, at import)."""
    return env_flag("HF_HUB_OFFLINE")


def apply_mirror(url: str, mirror: str | None = None) -> str:
    """Replace scheme and host of ``url`` with those of ``DCASENET_HUB_MIRROR`` (or ``mirror``); the path is kept.

    Example:
        >>> apply_mirror("https://github.com/a/b/raw/c/w.pt", "http://127.0.0.1:8000")
        'http://127.0.0.1:8000/a/b/raw/c/w.pt'
    """
    mirror = mirror if mirror is not None else os.environ.get("DCASENET_HUB_MIRROR", "").strip()
    if not mirror:
        return url
    m = urllib.parse.urlsplit(mirror if "://" in mirror else f"http://{mirror}")
    if not m.netloc:
        raise ValueError(f"DCASENET_HUB_MIRROR={mirror!r} is not a URL; expected e.g. http://host:port")
    u = urllib.parse.urlsplit(url)
    prefix = m.path.rstrip("/")
    return urllib.parse.urlunsplit((m.scheme, m.netloc, prefix + u.path, u.query, ""))


def git_blob_sha1_file(path: Path) -> str:
    """Git's blob SHA-1 of a file: ``sha1(b"blob <size>\\0" + content)``."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def probe(url: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Check within ``timeout`` seconds that the host of ``url`` resolves and accepts a TCP connection.

    Name resolution runs in a daemon thread so that a hanging resolver cannot exceed the deadline.

    Raises:
        NetworkUnavailableError: the host cannot be reached in time.
    """
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(u.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or 8080
    result: list[object] = []

    def _connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError as exc:
            result.append(exc)

    t = threading.Thread(target=_connect, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    if not result:
        raise NetworkUnavailableError(f"cannot reach {host}:{port} (no answer within {timeout:.0f} s)")
    if isinstance(result[0], OSError):
        raise NetworkUnavailableError(f"cannot reach {host}:{port} ({result[0]})")


def _open(url: str, start: int) -> tuple[object, int, int | None]:
    """Open ``url`` from byte ``start``; returns (response, offset the body starts at, total size or None)."""
    req = urllib.request.Request(url, headers={"User-Agent": "dcasenet-hub"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = urllib.request.urlopen(req, timeout=READ_TIMEOUT_S)  # noqa: S310 (http(s) URL from the manifest)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # range past the end: the partial file is suspect, start over
            return _open(url, 0)
        raise OSError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkUnavailableError(f"cannot reach {url} ({reason})") from exc
    status = getattr(resp, "status", 200)
    length = resp.headers.get("Content-Length")
    if status == 206:
        crange = resp.headers.get("Content-Range", "")  # bytes a-b/total
        offset = int(crange.split(" ")[1].split("-")[0]) if crange.startswith("bytes ") else start
        total_s = crange.rsplit("/", 1)[-1] if "/" in crange else ""
        total = int(total_s) if total_s.isdigit() else None
        return resp, offset, total
    return resp, 0, int(length) if length and length.isdigit() else None


def download(
    url: str,
    partial: Path,
    *,
    expected_git_sha1: str,
    desc: str = "",
    progress: bool = True,
    _fresh: bool = False,
) -> Path:
    """Stream ``url`` into ``partial`` (resuming what is there), then check its git blob SHA-1.

    Call :func:`probe` first: it bounds the time to notice that the host is unreachable. Connection breaks after
    some progress are retried (``MAX_ATTEMPTS``) with an HTTP range request from the end
    of the partial file; a server that ignores ranges makes the download start over. When a partial file left by an
    earlier run gives the wrong hash, the download starts over once; any other hash mismatch deletes the file.

    Returns:
        ``partial``, complete and verified.

    Raises:
        NetworkUnavailableError: the host cannot be reached (the partial file, if any, is kept for a later resume).
        ChecksumMismatchError: the complete file has the wrong hash (the file is deleted).
        OSError: an HTTP error status.
    """
    from tqdm.auto import tqdm

    partial.parent.mkdir(parents=True, exist_ok=True)
    if _fresh:
        partial.unlink(missing_ok=True)
    resumed_old_file = partial.exists() and partial.stat().st_size > 0
    last_error: Exception | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        have = partial.stat().st_size if partial.exists() else 0
        resp, offset, total = _open(url, have)
        if offset != have:  # server sent the whole file: start over
            logger.info("server ignored the range request; downloading %s from the start", url)
            have = 0
        received = 0
        try:
            with resp, open(partial, "r+b" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc or Path(urllib.parse.urlsplit(url).path).name, disable=not progress, leave=False,
            ) as bar:
                out.seek(have)
                out.truncate()
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            size = partial.stat().st_size
            if total is not None and size < total:
                raise ConnectionError(f"connection closed after {size} of {total} bytes")
            break
        except (OSError, http.client.HTTPException) as exc:  # keep the partial file for the next attempt
            last_error = exc
        if received == 0:
            raise NetworkUnavailableError(f"download of {url} stalled: {last_error}") from last_error
        logger.warning("download of %s interrupted (%s); resuming (attempt %d/%d)", url, last_error, attempt + 1,
                       MAX_ATTEMPTS)
    else:
        raise NetworkUnavailableError(f"download of {url} failed {MAX_ATTEMPTS} times: {last_error}")
    got = git_blob_sha1_file(partial)
    if got != expected_git_sha1 and resumed_old_file:
        # the partial file of an earlier run may belong to another file version: start over once
        logger.warning("resumed download of %s has the wrong hash; downloading it again from the start", url)
        return download(url, partial, expected_git_sha1=expected_git_sha1, desc=desc, progress=progress,
                        _fresh=True)
    if got != expected_git_sha1:
        size = partial.stat().st_size
        partial.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"Downloaded file from {url} has the wrong hash: expected git blob SHA-1 {expected_git_sha1}, "
            f"got {got} ({size} bytes). The file was deleted and nothing was cached. The server or mirror serves a "
            "different or damaged file; check DCASENET_HUB_MIRROR / DCASENET_HUB_MANIFEST, then retry."
        )
    return partial
