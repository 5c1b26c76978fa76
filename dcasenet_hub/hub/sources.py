"""Getting weights from their sources: official files (download, verify, convert once) and Hugging Face repos.

Official files (manifest ``github`` / ``url`` sources) go into the package cache; Hugging Face repos go through
huggingface_hub into its own cache (:mod:`dcasenet_hub.hub.cache`). Both fail fast, with the fixes named, when
offline or without network.

Example:
    >>> offline_reason(local_files_only=True)
    'local_files_only=True forbids downloads'
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from dcasenet_hub import _env
from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME
from dcasenet_hub.errors import (
    ChecksumMismatchError,
    DownloadError,
    OfflineError,
)
from dcasenet_hub.hub import fetch as _download
from dcasenet_hub.hub.cache import (
    check_writable,
    complete,
    hf_repo_folder,
    lock_path,
    prune,
    repo_folder,
    write_snapshot,
)
from dcasenet_hub.hub.checkpoint import (
    build_loaded,
    official_config,
    read_authors_checkpoint,
    serialize,
)
from dcasenet_hub.hub.registry import param_count

logger = logging.getLogger(__name__)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def offline_error(model_id: str, reason: str, cache: Path, folder: Path, *, env_var: str) -> OfflineError:
    """The error for weights that are not cached and cannot be fetched now, naming the fixes.

    ``env_var`` is the variable that points at a copied cache (``DCASENET_HUB_CACHE`` or ``HF_HUB_CACHE``).
    """
    unset = ("\nUnset HF_HUB_OFFLINE / local_files_only to allow downloads."
             if reason.startswith(("offline mode", "local_files_only")) else "")
    return OfflineError(
        f"Cannot get '{model_id}': {reason}, and it is not in the cache ({folder} does not hold it). Fixes:\n"
        f"  1. On a machine with internet run `dcasenet-hub download {model_id}`, then copy the cache folder "
        f"{folder.relative_to(cache)} from there into {cache} on this machine (or point {env_var} / cache_dir= "
        "at a copied cache).\n"
        "  2. Serve the official files from a local mirror: DCASENET_HUB_MIRROR=http://host:port (same paths), "
        "and add or override entries with DCASENET_HUB_MANIFEST=/path/to/manifest.json.\n"
        "  3. Use a local copy (a folder with config.json + model.safetensors, or the authors' best_ASC.pt): on the "
        "command line `--model PATH` (`finetune --base PATH`; `export`/`evaluate` take it as MODEL); in Python "
        "from_pretrained('/path/to/dir_with_config_and_safetensors') or "
        "from_pretrained('/path/to/best_ASC.pt')." + unset
    )


def offline_reason(local_files_only: bool) -> str | None:
    """Why the network may not be used now (``local_files_only`` or ``HF_HUB_OFFLINE`` at call time), or None."""
    if local_files_only:
        return "local_files_only=True forbids downloads"
    if _env.hf_offline():
        return f"offline mode (HF_HUB_OFFLINE={_env.text('HF_HUB_OFFLINE')})"
    return None


#: Without a manifest ``size``, an official checkpoint may be at most this many times its float32 parameter bytes
#: (plus ``_SIZE_SLACK``): a state_dict holds the parameters, a few buffers and names.
_SIZE_FACTOR = 2
_SIZE_SLACK = 16 << 20


def max_download_bytes(entry: dict[str, Any], source: dict[str, Any]) -> int:
    """Most bytes the download of ``source`` may have: the manifest ``size``, else a bound from the architecture."""
    if isinstance(source.get("size"), int):
        return source["size"]
    return _SIZE_FACTOR * 4 * param_count(entry["arch"]) + _SIZE_SLACK


def fetch_official(model_id: str, entry: dict[str, Any], source: dict[str, Any], *, cache: Path,
                   local_files_only: bool, progress: bool, label: str | None = None) -> Path:
    """Snapshot of official ``source`` in the package cache ``cache``: downloaded (resumable, hash-checked, under
    a file lock), converted to safetensors and stored once; raises OfflineError when it cannot be fetched now."""
    from filelock import FileLock, Timeout

    label = label or model_id
    sha1 = source["git_blob_sha1"]
    repo = repo_folder(cache, model_id)
    snap = repo / "snapshots" / sha1
    if complete(snap):
        return snap
    reason = offline_reason(local_files_only)
    if reason:
        raise offline_error(label, reason, cache, repo, env_var="DCASENET_HUB_CACHE")
    url = _download.apply_mirror(source["url"])
    lock = FileLock(str(lock_path(cache, model_id, sha1)))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        logger.info("Another process is downloading %s; waiting for it", model_id)
        lock.acquire()
    try:
        if complete(snap):  # the other process finished it
            return snap
        partial = repo / "blobs" / f"{sha1}.incomplete"
        logger.info("Downloading %s from %s", model_id, url)
        try:
            _download.download(url, partial, digest=sha1, algorithm="git-blob-sha1",
                               max_bytes=max_download_bytes(entry, source), desc=model_id, progress=progress,
                               fix="The server or mirror serves a different or damaged file; check "
                                   "DCASENET_HUB_MIRROR / DCASENET_HUB_MANIFEST (its 'size'), then retry.")
        except OfflineError as exc:
            prune(repo, cache)  # empty folders only: a partial file stays to be resumed
            raise offline_error(label, f"no network ({exc})", cache, repo, env_var="DCASENET_HUB_CACHE") from exc
        except DownloadError:
            prune(repo, cache)
            raise
        try:
            model = build_loaded(None, official_config(model_id, entry, source), read_authors_checkpoint(partial),
                                 source=f"{url} ({model_id})")
            snap = write_snapshot(repo, sha1, serialize(model))
        except BaseException:
            partial.unlink(missing_ok=True)
            prune(repo, cache)
            raise
        partial.unlink(missing_ok=True)
        logger.info("Cached %s in %s", model_id, snap)
        return snap
    finally:
        lock.release()


def fetch_hf(repo_id: str, *, revision: str | None, cache: Path, local_files_only: bool,
             expected_sha256: str | None = None, label: str | None = None) -> Path:
    """Folder holding config.json + model.safetensors of Hugging Face repo ``repo_id`` at ``revision``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from dcasenet_hub import __version__

    label = label or repo_id
    folder = hf_repo_folder(cache, repo_id)
    reason = offline_reason(local_files_only)
    offline = reason is not None
    if not offline and revision and _COMMIT_RE.match(revision):
        # a pinned commit never changes: use the cache without asking the server
        snap = folder / "snapshots" / revision
        if complete(snap, (CONFIG_NAME, WEIGHTS_NAME)):
            offline = True
    if not offline:
        endpoint = _env.hf_endpoint()
        try:
            _download.probe(endpoint)
        except OfflineError as exc:  # bounded wait; huggingface_hub's own retries take ~23 s
            reason = f"no network ({exc})"
            offline = True
    if not offline:  # one message naming the folder and the fix, before huggingface_hub writes anything
        check_writable(cache, env_var="HF_HUB_CACHE")
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(Path(hf_hub_download(
                repo_id, name, revision=revision, cache_dir=cache, local_files_only=offline,
                library_name="dcasenet-hub", library_version=__version__,
            )))
        except LocalEntryNotFoundError as exc:
            raise offline_error(label, reason or "the file could not be downloaded", cache, folder,
                                env_var="HF_HUB_CACHE") from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise ValueError(f"Hugging Face repo {repo_id!r} (revision {revision or 'main'}) not found or not "
                             f"accessible: {exc}") from exc
        except EntryNotFoundError as exc:
            raise ValueError(f"Hugging Face repo {repo_id!r} has no {name}: it is not a dcasenet-hub model "
                             "(those hold config.json + model.safetensors)") from exc
    if expected_sha256 is not None:
        check_sha256(paths[1], expected_sha256, f"{repo_id}@{revision}")
    return paths[0].parent


def check_sha256(path: Path, expected: str, origin: str) -> None:
    """Raise ChecksumMismatchError unless ``path`` has sha256 ``expected`` (``origin`` says where it came from)."""
    got = _download.sha256_file(path)
    if got != expected:
        raise ChecksumMismatchError(
            f"{path} (from {origin}) has the wrong hash: expected sha256 {expected}, got {got}. Delete that "
            "model's folder from the cache and download again; if it persists, the manifest entry is wrong."
        )


