"""HTTP download of official checkpoints: streamed, resumable, hashed as it goes, with short network timeouts.

Private helpers of :mod:`dcasenet_hub.hub.sources`. Only the standard library is used for HTTP (``urllib``), so proxies set
with ``HTTPS_PROXY``/``HTTP_PROXY`` apply. No code from a download is ever executed here: bytes go to a file and a
hash.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dcasenet_hub.errors import (
    ChecksumMismatchError,
    DownloadTooLargeError,
    NetworkUnavailableError,
)

logger = logging.getLogger(__name__)

#: Seconds allowed for name resolution plus TCP connect, and for any silence while reading.
CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 30.0
#: Attempts of one download when the connection breaks after some bytes arrived (each resumes the partial file).
MAX_ATTEMPTS = 5
CHUNK = 1 << 20

_TRUE = {"1", "true", "yes", "on"}


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


#: Errors of a connection (refused, reset, timed out, cut mid-body); ``urllib.error.HTTPError`` is handled first.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


@dataclass
class Transfer:
    """What one :func:`fetch_into` attempt did, filled in as it goes (so it is valid after an exception too).

    Attributes:
        start: Byte offset of ``part`` the response body was written from (0 when the file was rewritten).
        received: Bytes written by this attempt.
        total: Full size of the remote file announced by the server, if it announced one.
    """

    start: int = 0
    received: int = 0
    total: int | None = None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, full size)`` of a ``Content-Range: bytes a-b/total`` header (None where absent)."""
    m = re.match(r"\s*bytes\s+(\d+)-\d*/(\d+|\*)", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2).isdigit() else None)


def fetch_into(url: str, part: Path, *, transfer: Transfer, timeout: float, desc: str = "",
               progress: bool = True, user_agent: str = "dcasenet-hub", max_bytes: int | None = None) -> None:
    """One GET of ``url`` into ``part``, resuming after the bytes already there with ``Range: bytes=N-``.

    The resumable-download loop of both downloaders (weights in :func:`download`, datasets in
    :func:`dcasenet_hub.train.data_download.download_file`); each adds its own retries and hash. A ``206`` answer
    starting at byte N appends to ``part``; a ``200`` (a server that ignores ranges) rewrites it from byte 0; a
    ``206`` starting anywhere else is dropped and the file is fetched again from the start. With ``max_bytes``,
    reading stops as soon as the file would grow past that size (an announced size past it is refused before any
    byte is read), so an endless or oversized body cannot fill the disk before the hash check.

    Raises:
        DownloadTooLargeError: the file would exceed ``max_bytes`` (``part`` keeps what arrived; callers delete it).
        urllib.error.HTTPError: an error status (callers decide what ``416`` means for their partial file).
        urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError: the connection failed;
            ``part`` keeps what arrived (``transfer.received`` bytes more than before).
        http.client.IncompleteRead: the body ended before the announced size.
    """
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": user_agent}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        status = getattr(resp, "status", 200)
        length_s = resp.headers.get("Content-Length")
        length = int(length_s) if length_s and length_s.isdigit() else None
        start, total = _content_range(resp.headers.get("Content-Range")) if status == 206 else (0, length)
        if have and status == 206 and start != have:  # an answer for other bytes: start over without a range
            logger.info("%s: the server answered the range request from byte %s; downloading from the start",
                        desc or url, start)
            part.unlink()
            fetch_into(url, part, transfer=transfer, timeout=timeout, desc=desc, progress=progress,
                       user_agent=user_agent, max_bytes=max_bytes)
            return
        if have and status != 206:
            logger.info("%s: the server does not resume; downloading from the start", desc or url)
        start = start or 0
        if total is None and length is not None:
            total = start + length
        transfer.start, transfer.total = start, total
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DownloadTooLargeError(f"{url} announces {total} bytes, more than the {max_bytes} bytes the file "
                                        "can have")
        with open(part, "r+b" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc or Path(urllib.parse.urlsplit(url).path).name, disable=not progress, leave=False,
        ) as bar:
            out.seek(start)
            out.truncate()
            while block := resp.read(CHUNK):
                if max_bytes is not None and start + transfer.received + len(block) > max_bytes:
                    raise DownloadTooLargeError(f"{url} sent more than the {max_bytes} bytes the file can have; "
                                                "stopped reading")
                out.write(block)
                transfer.received += len(block)
                bar.update(len(block))
    if total is not None and start + transfer.received < total:
        raise http.client.IncompleteRead(b"", total - start - transfer.received)


def download(
    url: str,
    partial: Path,
    *,
    expected_git_sha1: str,
    max_bytes: int | None = None,
    desc: str = "",
    progress: bool = True,
    _fresh: bool = False,
) -> Path:
    """Stream ``url`` into ``partial`` (resuming what is there), then check its git blob SHA-1.

    Call :func:`probe` first: it bounds the time to notice that the host is unreachable. Connection breaks after
    some progress are retried (``MAX_ATTEMPTS``) with an HTTP range request from the end
    of the partial file; a server that ignores ranges makes the download start over. When a partial file left by an
    earlier run gives the wrong hash, the download starts over once; any other hash mismatch deletes the file.

    ``max_bytes`` bounds the file: a response that would make it larger is cut off and the file deleted.

    Returns:
        ``partial``, complete and verified.

    Raises:
        DownloadTooLargeError: the server sent more than ``max_bytes`` (the file is deleted).
        NetworkUnavailableError: the host cannot be reached (the partial file, if any, is kept for a later resume).
        ChecksumMismatchError: the complete file has the wrong hash (the file is deleted).
        OSError: an HTTP error status.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    if _fresh:
        partial.unlink(missing_ok=True)
    resumed_old_file = partial.exists() and partial.stat().st_size > 0
    last_error: Exception | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        transfer = Transfer()
        try:
            fetch_into(url, partial, transfer=transfer, timeout=READ_TIMEOUT_S, desc=desc, progress=progress,
                       max_bytes=max_bytes)
            break
        except DownloadTooLargeError as exc:
            partial.unlink(missing_ok=True)
            raise DownloadTooLargeError(
                f"{exc}. The partial file was deleted and nothing was cached. The server or mirror serves a "
                "different file; check DCASENET_HUB_MIRROR / DCASENET_HUB_MANIFEST (its 'size'), then retry."
            ) from None
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and partial.is_file() and partial.stat().st_size:
                # range past the end: the partial file is longer than the file, so it is suspect: start over
                logger.info("partial file of %s is longer than the file; downloading it from the start", url)
                partial.unlink()
                last_error = exc
                continue
            raise OSError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
        except NETWORK_ERRORS as exc:  # keep the partial file for the next attempt
            last_error = exc
        if transfer.received == 0:
            reason = getattr(last_error, "reason", last_error)
            raise NetworkUnavailableError(f"cannot reach {url} or it sent nothing ({reason})") from last_error
        logger.warning("download of %s interrupted (%s); resuming (attempt %d/%d)", url, last_error, attempt + 1,
                       MAX_ATTEMPTS)
    else:
        raise NetworkUnavailableError(f"download of {url} failed {MAX_ATTEMPTS} times: {last_error}")
    got = git_blob_sha1_file(partial)
    if got != expected_git_sha1 and resumed_old_file:
        # the partial file of an earlier run may belong to another file version: start over once
        logger.warning("resumed download of %s has the wrong hash; downloading it again from the start", url)
        return download(url, partial, expected_git_sha1=expected_git_sha1, max_bytes=max_bytes, desc=desc,
                        progress=progress, _fresh=True)
    if got != expected_git_sha1:
        size = partial.stat().st_size
        partial.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"Downloaded file from {url} has the wrong hash: expected git blob SHA-1 {expected_git_sha1}, "
            f"got {got} ({size} bytes). The file was deleted and nothing was cached. The server or mirror serves a "
            "different or damaged file; check DCASENET_HUB_MIRROR / DCASENET_HUB_MANIFEST, then retry."
        )
    return partial
