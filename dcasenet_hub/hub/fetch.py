"""HTTP downloads: streamed, resumable, retried, verified by size and hash, with short network timeouts.

:func:`download` is the one download loop of the package: official weights (:mod:`dcasenet_hub.hub.sources`) and
datasets (:mod:`dcasenet_hub.train.data_download`) both use it. Only the standard library is used for HTTP
(``urllib``), so proxies set with ``HTTPS_PROXY``/``HTTP_PROXY`` apply. No code from a download is ever executed
here: bytes go to a file and a hash.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dcasenet_hub import _env
from dcasenet_hub.errors import (
    ChecksumMismatchError,
    DownloadError,
    DownloadTooLargeError,
    OfflineError,
)

logger = logging.getLogger(__name__)

#: Seconds allowed for name resolution plus TCP connect, and for any silence while reading.
CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 30.0
#: Attempts of one download when the connection breaks after some bytes arrived (each resumes the partial file).
MAX_ATTEMPTS = 5
CHUNK = 1 << 20

def apply_mirror(url: str, mirror: str | None = None) -> str:
    """Replace scheme and host of ``url`` with those of ``DCASENET_HUB_MIRROR`` (or ``mirror``); the path is kept.

    Example:
        >>> apply_mirror("https://github.com/a/b/raw/c/w.pt", "http://127.0.0.1:8000")
        'http://127.0.0.1:8000/a/b/raw/c/w.pt'
    """
    mirror = mirror if mirror is not None else _env.weights_mirror()
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
    return file_digest(path, "git-blob-sha1")


def git_blob_sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def probe(url: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Check within ``timeout`` seconds that the host of ``url`` resolves and accepts a TCP connection.

    Name resolution runs in a daemon thread so that a hanging resolver cannot exceed the deadline.

    Raises:
        OfflineError: the host cannot be reached in time.
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
        raise OfflineError(f"cannot reach {host}:{port} (no answer within {timeout:.0f} s)")
    if isinstance(result[0], OSError):
        raise OfflineError(f"cannot reach {host}:{port} ({result[0]})")


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

    One attempt of :func:`download`, which adds the retries and the checks. A ``206`` answer
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
            # read1 returns what has arrived (up to CHUNK): a connection that stalls keeps every byte it sent and
            # counts as having sent something (resumed), where read(CHUNK) waited for a whole chunk and lost it
            read = getattr(resp, "read1", resp.read)
            while block := read(CHUNK):
                if max_bytes is not None and start + transfer.received + len(block) > max_bytes:
                    raise DownloadTooLargeError(f"{url} sent more than the {max_bytes} bytes the file can have; "
                                                "stopped reading")
                out.write(block)
                transfer.received += len(block)
                bar.update(len(block))
    if total is not None and start + transfer.received < total:
        raise http.client.IncompleteRead(b"", total - start - transfer.received)


#: HTTP statuses worth another attempt (the server is busy or failing for a moment); any other fails at once.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: First pause between attempts in seconds (doubling, at most ``MAX_RETRY_DELAY_S``).
RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
#: Hashes :func:`download` checks, and the name its messages give each.
HASH_NAMES = {"git-blob-sha1": "git blob SHA-1", "md5": "MD5", "sha256": "SHA-256"}


def file_digest(path: Path, algorithm: str, *, progress: bool = False, desc: str = "") -> str:
    """Hex digest of a file: ``"md5"``, ``"sha256"`` or ``"git-blob-sha1"`` (git's id of the content)."""
    from tqdm.auto import tqdm

    if algorithm not in HASH_NAMES:
        raise ValueError(f"unknown hash {algorithm!r}; one of {', '.join(HASH_NAMES)}")
    size = path.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size) if algorithm == "git-blob-sha1" else hashlib.new(algorithm)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"{algorithm} {desc or path.name}", disable=not progress,
                                     leave=False) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def check_file(path: Path, *, digest: str | None, algorithm: str = "git-blob-sha1", size: int | None = None,
               progress: bool = False, desc: str = "") -> str | None:
    """What is wrong with ``path`` against its published size and hash (``None``: nothing; no hash: a warning)."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"size mismatch: expected {size} bytes, got {got_size}"
    if digest is None:
        logger.warning("%s: no published hash is known; integrity not checked", desc or path.name)
        return None
    got = file_digest(path, algorithm, progress=progress, desc=desc)
    if got != digest:
        return f"{HASH_NAMES[algorithm]} mismatch: expected {digest}, got {got} ({got_size} bytes)"
    return None


def _kept(partial: Path) -> str:
    """What became of the partial file after a failed download, truthfully (an empty one is removed)."""
    n = partial.stat().st_size if partial.is_file() else 0
    if n:
        return f"; the partial file {partial} ({n} bytes) is kept and resumed next time"
    partial.unlink(missing_ok=True)
    return "; nothing was written"


def download(
    url: str,
    partial: Path,
    *,
    digest: str | None,
    algorithm: str = "git-blob-sha1",
    size: int | None = None,
    max_bytes: int | None = None,
    attempts: int = MAX_ATTEMPTS,
    timeout: float = READ_TIMEOUT_S,
    desc: str = "",
    progress: bool = True,
    user_agent: str = "dcasenet-hub",
    fix: str = "",
) -> Path:
    """Stream ``url`` into ``partial`` (resuming what is there) and check its size and hash: the one download loop.

    Both downloaders use it: weights (git blob SHA-1) and datasets (MD5 and size where published). The host is
    probed first (:func:`probe`, bounded), so no network fails within seconds. A connection that breaks after some
    bytes is resumed with a range request, up to ``attempts`` attempts with a short doubling pause; so are the
    statuses in :data:`RETRY_STATUSES`. An attempt that receives nothing means the host cannot be used now: it
    fails at once. A partial file from an earlier run that gives the wrong size or hash (or that a server answers
    with ``416``, range past the end, while it is wrong) is downloaded again from the start, once.

    Args:
        url: http(s) URL.
        partial: File the bytes go to (kept after a network failure, to be resumed).
        digest: Expected hex digest, or ``None`` (no check; a warning is logged).
        algorithm: One of :data:`HASH_NAMES`.
        size: Expected size in bytes, if published (also bounds the body).
        max_bytes: Most bytes the file may have (the body is cut off past it).
        attempts: Attempts in all.
        timeout: Socket timeout in seconds.
        desc: Name of the file in progress bars and messages.
        progress: Show a tqdm bar.
        user_agent: HTTP ``User-Agent``.
        fix: What to check when the server sends a different file (appended to those errors).

    Returns:
        ``partial``, complete and verified.

    Raises:
        OfflineError: the host cannot be reached or sent nothing (what was received is kept; the message says so).
        DownloadError: an HTTP error status, or ``attempts`` attempts broke off.
        ChecksumMismatchError: the file has the wrong size or hash (it is deleted).
        DownloadTooLargeError: the server sent more than ``size`` / ``max_bytes`` (the file is deleted).
    """
    try:
        probe(url)
    except OfflineError as exc:
        raise OfflineError(f"{exc}{_kept(partial)}") from None
    partial.parent.mkdir(parents=True, exist_ok=True)
    resumed = partial.is_file() and partial.stat().st_size > 0
    bound = size if size is not None else max_bytes
    name = desc or Path(urllib.parse.urlsplit(url).path).name
    for fresh in (False, True):
        _fetch(url, partial, size=size, max_bytes=bound, attempts=attempts, timeout=timeout, desc=name,
               progress=progress, user_agent=user_agent, fix=fix)
        problem = check_file(partial, digest=digest, algorithm=algorithm, size=size, progress=progress, desc=name)
        if problem is None:
            return partial
        partial.unlink(missing_ok=True)
        if fresh or not resumed:
            break
        # the partial file of an earlier run may belong to another version of the file: start over once
        logger.warning("%s: the resumed download has a %s; downloading it again from the start", name,
                       problem.split(":")[0])
    raise ChecksumMismatchError(f"{name} from {url}: {problem}; the file was deleted and nothing was kept. "
                                f"{fix}".rstrip())


def _fetch(url: str, partial: Path, *, size: int | None, max_bytes: int | None, attempts: int, timeout: float,
           desc: str, progress: bool, user_agent: str, fix: str) -> None:
    """The retrying part of :func:`download`: ``partial`` holds the whole body (or what a 416 leaves) after it."""
    last: Exception | None = None
    for attempt in range(1, max(1, attempts) + 1):
        if size is not None and partial.is_file() and partial.stat().st_size == size:
            return  # nothing left to fetch; the check decides
        transfer = Transfer()
        try:
            fetch_into(url, partial, transfer=transfer, timeout=timeout, desc=desc, progress=progress,
                       user_agent=user_agent, max_bytes=max_bytes)
            return
        except DownloadTooLargeError as exc:
            partial.unlink(missing_ok=True)
            raise DownloadTooLargeError(f"{exc}; the partial file was deleted and nothing was kept. "
                                        f"{fix}".rstrip()) from None
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and partial.is_file() and partial.stat().st_size:
                return  # range past the end: the partial file is complete, or too long (the check decides)
            if exc.code not in RETRY_STATUSES:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}{_kept(partial)}") from None
            last = exc
        except NETWORK_ERRORS as exc:
            last = exc
            if transfer.received == 0:
                reason = getattr(exc, "reason", exc)
                raise OfflineError(f"cannot reach {url} or it sent nothing ({reason}){_kept(partial)}") from None
        if attempt < attempts:
            delay = min(MAX_RETRY_DELAY_S, RETRY_DELAY_S * 2 ** (attempt - 1))
            logger.warning("%s: %s; retrying in %.1f s (attempt %d/%d)", desc, last, delay, attempt + 1, attempts)
            time.sleep(delay)
    raise DownloadError(f"download of {url} failed {attempts} times ({last}){_kept(partial)}")
