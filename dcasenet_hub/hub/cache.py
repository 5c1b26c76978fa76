"""The two caches: where converted official weights and Hugging Face repos live, how snapshots are written, checked
and re-hashed.

* **The package cache** (:func:`cache_dir_location`): ``cache_dir=``, else ``$DCASENET_HUB_CACHE``, else
  ``$XDG_CACHE_HOME/dcasenet_hub``, else ``~/.cache/dcasenet_hub``. Official (manifest, non-Hugging Face) weights are
  converted into ``models/<id>/`` there, with huggingface_hub's inner layout (``blobs/``, ``snapshots/<sha1>/``,
  ``refs/main``) so blobs are named by their hash and can be re-checked.
* **The Hugging Face cache** (:func:`hf_cache_location`): ``cache_dir=``, else ``$HF_HUB_CACHE``, else
  ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``. Only real Hugging Face repos (repo ids and the manifest's
  ``huggingface`` sources) are there, fetched by huggingface_hub itself. The old layout also put official
  conversions there, as ``models--dcasenet-hub--<id>``; :mod:`dcasenet_hub.hub.legacy` moves those over once.

docs/weights.md describes the layout.

Example:
    >>> cache_dir_location("/data/cache")
    PosixPath('/data/cache')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcasenet_hub import _env
from dcasenet_hub._io import atomic_write_text, recorded_stamp, stamp_matches, stat_now
from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME
from dcasenet_hub.hub import fetch as _download
from dcasenet_hub.hub.manifest import ManifestError, load_manifest

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
SNAPSHOT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: Folder of the package cache that holds one folder per official model id.
MODELS_DIR = "models"
#: Owner part of the Hugging Face cache folders of the old layout: ``models--dcasenet-hub--<id>``.
LEGACY_OWNER = "dcasenet-hub"
#: Suffix of the sidecar beside a verified weights blob: JSON with its sha256 and stat stamp when last hashed.
VERIFIED_SUFFIX = ".verified"
_SHA256_NAME_RE = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------------------------


def cache_dir_location(cache_dir: str | Path | None = None) -> Path:
    """The package cache (converted official weights): ``cache_dir``, else ``$DCASENET_HUB_CACHE``, else
    ``$XDG_CACHE_HOME/dcasenet_hub``, else ``~/.cache/dcasenet_hub``. The environment is read at call time.

    Example:
        >>> cache_dir_location("~/x") == Path.home() / "x"
        True
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return _env.package_cache() or _env.user_cache() / "dcasenet_hub"


def check_writable(cache: Path, *, env_var: str = "DCASENET_HUB_CACHE") -> None:
    """Raise :class:`~dcasenet_hub.errors.CacheNotWritableError` unless files can be created in ``cache``.

    Called before a download writes anything, so a read-only or misplaced cache is one message naming the folder
    and the fix, the same for every command, instead of an ``OSError`` from deep inside a download.
    """
    import tempfile

    from dcasenet_hub.errors import CacheNotWritableError

    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache):
            pass
    except OSError as exc:
        raise CacheNotWritableError(
            f"the weights cache {cache} cannot be written ({exc.strerror or exc}); set {env_var} to a writable "
            f"folder (or pass --cache-dir), or make {cache} writable, then run the command again") from None


def hf_cache_location(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face cache (repo ids and ``huggingface`` sources): ``cache_dir``, else ``$HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (the huggingface_hub default), read at call time.

    Example:
        >>> hf_cache_location("/data/hf")
        PosixPath('/data/hf')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return _env.hf_cache() or _env.user_cache() / "huggingface" / "hub"


def repo_folder(cache: Path, model_id: str) -> Path:
    """Folder of official model ``model_id`` in the package cache ``cache``."""
    return cache / MODELS_DIR / model_id


def legacy_repo_folder(hf_cache: Path, model_id: str) -> Path:
    """Where the old layout puts official model ``model_id``: inside the Hugging Face cache."""
    return hf_cache / f"models--{LEGACY_OWNER}--{model_id}"


def hf_repo_folder(hf_cache: Path, repo_id: str) -> Path:
    return hf_cache / ("models--" + repo_id.replace("/", "--"))


def lock_path(cache: Path, model_id: str, revision: str) -> Path:
    """The lock file that serialises downloads and migrations of one snapshot (kept, as huggingface_hub does)."""
    return mkdir(cache / ".locks" / MODELS_DIR / model_id) / f"{revision}.lock"


def mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def complete(snapshot: Path, names: Sequence[str] = SNAPSHOT_FILES) -> bool:
    return all((snapshot / n).is_file() for n in names)


def cached_snapshot(source: dict[str, Any], model_id: str, cache: Path, hf_cache: Path) -> Path | None:
    """The complete snapshot of ``source`` (official: in the package cache; Hugging Face: in its cache) or None."""
    if source["type"] == "huggingface":
        snap = hf_repo_folder(hf_cache, source["repo_id"]) / "snapshots" / source["revision"]
        return snap if complete(snap, (CONFIG_NAME, WEIGHTS_NAME)) else None
    snap = repo_folder(cache, model_id) / "snapshots" / source["git_blob_sha1"]
    return snap if complete(snap) else None


# ----------------------------------------------------------------------------------------------------------------
# Verified weights: the sidecar record and the check on load
# ----------------------------------------------------------------------------------------------------------------


def write_verified(blob: Path, sha256: str, *, stat: tuple[os.stat_result, bool] | None = None) -> None:
    """Record that ``blob`` has content hash ``sha256``, with its stat stamp (:func:`dcasenet_hub._io.stat_now`,
    taken before the hash: ``stat``, default now)."""
    try:
        st, racy = stat if stat is not None else stat_now(blob)
        atomic_write_text(blob.with_name(blob.name + VERIFIED_SUFFIX),
                          json.dumps({**recorded_stamp(st, racy), "sha256": sha256}) + "\n")
    except OSError as exc:  # a read-only cache still loads; it is just hashed in full each time
        logger.info("cannot write the verification record of %s (%s)", blob, exc)


def damaged_files(snap: Path) -> str | None:
    """Check the cached ``config.json`` and ``model.safetensors`` of snapshot ``snap``; ``None`` when both are intact,
    else what is wrong.

    ``config.json`` (a few KB) is hashed in full at every use and compared with its blob's name (git blob SHA-1), as
    ``verify`` does. The weights blob is named by its sha256. The sidecar ``<blob>.verified`` holds the sha256 of
    the last full hash and the file's stat stamp then (size, mtime_ns, inode, ctime_ns:
    :data:`dcasenet_hub._io.STAMP_KEYS`): while the stamp is unchanged the content is (no re-hash); otherwise (or
    without a sidecar) the file is hashed in full and compared with its name, and the sidecar is rewritten.
    """
    config_damage = damaged_snapshot(snap, (CONFIG_NAME,))
    if config_damage is not None:
        return f"cached {config_damage}"
    weights = snap / WEIGHTS_NAME
    blob = weights.resolve()
    if not blob.is_file():
        return f"cached {weights} is missing (broken link to {blob})"
    if _SHA256_NAME_RE.match(blob.name):
        expected = blob.name
    else:  # a copied snapshot file (no symlinks): it must equal one of the repo's blobs
        got = _download.sha256_file(blob)
        if (snap.parent.parent / "blobs" / got).is_file():
            return None
        return f"cached {weights} is damaged (sha256 {got} is not one of the cached blobs)"
    sidecar = blob.with_name(blob.name + VERIFIED_SUFFIX)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    stat = stat_now(blob)  # before the hash: a change while it is read fails the next check
    if isinstance(record, dict) and record.get("sha256") == expected and stamp_matches(record, stat[0]):
        return None
    got = _download.sha256_file(blob)
    if got != expected:
        return (f"cached {weights} is damaged (expected sha256 {expected}, got {got}, "
                f"{blob.stat().st_size} bytes)")
    write_verified(blob, got, stat=stat)
    return None


def content_hash(path: Path, name: str) -> str:
    """The hash the blob of snapshot file ``name`` is named by: sha256 for weights, git blob SHA-1 for text files."""
    return _download.sha256_file(path) if name == WEIGHTS_NAME else _download.git_blob_sha1_file(path)


def damaged_snapshot(snap: Path, names: Sequence[str] = SNAPSHOT_FILES) -> str | None:
    """Hash every file of ``snap`` in full; ``None`` when each one's content is a blob of its repo, else what is wrong.

    A linked file must point at the blob named by its content hash; a copied file must equal one of the blobs.
    No sidecar is trusted: this is the check before a snapshot is copied elsewhere.
    """
    blobs = snap.parent.parent / "blobs"
    for name in names:
        f = snap / name
        target = f.resolve()
        if not target.is_file():
            return f"{f} is missing (broken link to {target})"
        got = content_hash(target, name)
        if f.is_symlink() and target.name != got:
            return f"{f} is damaged (its blob is named {target.name}, its content hashes to {got})"
        if not (blobs / got).is_file():
            return f"{f} is damaged (its content hash {got} is not one of the cached blobs)"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Writing and removing snapshots
# ----------------------------------------------------------------------------------------------------------------


def write_snapshot(repo: Path, revision: str, files: dict[str, bytes]) -> Path:
    """Store ``files`` as content-addressed blobs and link them from ``snapshots/<revision>/``; write refs/main.

    Blob names follow huggingface_hub: sha256 for the weights (as for LFS files), git blob SHA-1 for text files.
    The snapshot folder is assembled aside and renamed into place, so it is either complete or absent.
    """
    from dcasenet_hub._io import atomic_write_bytes

    blobs = repo / "blobs"
    snap = repo / "snapshots" / revision
    mkdir(repo / "snapshots")
    tmp_snap = Path(tempfile.mkdtemp(prefix=f".snapshot-{revision}.", dir=repo))  # beside, not inside, snapshots/
    try:
        for name, data in files.items():
            blob_name = (hashlib.sha256(data).hexdigest() if name == WEIGHTS_NAME
                         else _download.git_blob_sha1_bytes(data))
            blob = blobs / blob_name
            atomic_write_bytes(blob, data)  # always (re)written: a blob already there may be damaged
            if name == WEIGHTS_NAME:
                write_verified(blob, blob_name)
            try:
                os.symlink(os.path.join("..", "..", "blobs", blob_name), tmp_snap / name)
            except OSError:  # no symlinks (e.g. Windows without developer mode): copy, as huggingface_hub does
                shutil.copyfile(blob, tmp_snap / name)
        old = None
        if snap.exists():  # moved aside, not removed file by file: readers never see a half-removed snapshot
            old = Path(tempfile.mkdtemp(prefix=f".old-snapshot-{revision}.", dir=repo))
            os.replace(snap, old / revision)
        os.replace(tmp_snap, snap)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_snap, ignore_errors=True)
        raise
    atomic_write_text(repo / "refs" / "main", revision)
    return snap


def discard_snapshot(snap: Path, stop: Path) -> None:
    """Remove snapshot ``snap``, its weights blob and that blob's sidecar (after they were found damaged)."""
    blob = (snap / WEIGHTS_NAME).resolve()
    repo = snap.parent.parent
    if blob.parent == (repo / "blobs").resolve():
        blob.unlink(missing_ok=True)
        blob.with_name(blob.name + VERIFIED_SUFFIX).unlink(missing_ok=True)
    shutil.rmtree(snap, ignore_errors=True)
    (repo / "refs" / "main").unlink(missing_ok=True)
    prune(repo, stop)


def prune(folder: Path, stop: Path) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``stop``."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


@dataclass(frozen=True)
class CachedModel:
    """One converted official model found in a cache.

    Attributes:
        model_id: The manifest id it is stored under.
        snapshot: Its snapshot folder (``config.json`` + ``model.safetensors`` + ``README.md``).
        size: Bytes of its blobs.
        legacy: True for a folder an older release left in the Hugging Face cache (moved on first use).
    """

    model_id: str
    snapshot: Path
    size: int
    legacy: bool = False


def cached_models(*, cache_dir: str | Path | None = None) -> list[CachedModel]:
    """The converted official models in the package cache, then those an older release left in the HF cache.

    Example:
        >>> [m.model_id for m in cached_models(cache_dir="/nonexistent")]
        []
    """
    cache, hf_cache = cache_dir_location(cache_dir), hf_cache_location(cache_dir)
    found = [(p.name, p, False) for p in sorted((cache / MODELS_DIR).glob("*"))]
    prefix = f"models--{LEGACY_OWNER}--"
    found += [(p.name.removeprefix(prefix), p, True) for p in sorted(hf_cache.glob(prefix + "*"))]
    out = []
    for model_id, repo, legacy in found:
        size = sum(b.stat().st_size for b in (repo / "blobs").glob("*") if b.is_file())
        for snap in sorted((repo / "snapshots").glob("*")):
            if complete(snap):
                out.append(CachedModel(model_id, snap, size, legacy))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Re-hashing everything
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheCheck:
    """Result of re-hashing one cached file.

    Attributes:
        path: The file.
        ok: Whether its content matches ``expected``.
        expected: The hash its name (blob) or the manifest promises.
        got: The hash of its content now.
    """

    path: Path
    ok: bool
    expected: str
    got: str


def verify_cache(*, cache_dir: str | Path | None = None) -> list[CacheCheck]:
    """Re-hash every cached file of dcasenet-hub models, in both caches.

    Covered: the package cache's ``models/<id>`` folders, folders an older release left in the Hugging Face cache
    (``models--dcasenet-hub--<id>``, not yet migrated) and the manifest's Hugging Face sources. Blobs are named by
    their hash (sha256 for weights, git blob SHA-1 for text files, as huggingface_hub does); each is re-hashed and
    compared with its name, and every snapshot link must lead to an existing blob.

    Args:
        cache_dir: One folder to use for both caches (as ``download(cache_dir=...)``); default: their locations.

    Returns:
        One :class:`CacheCheck` per file (empty when nothing is cached).

    Example:
        >>> [c for c in verify_cache() if not c.ok]   # doctest: +SKIP
        []
    """
    cache, hf_cache = cache_dir_location(cache_dir), hf_cache_location(cache_dir)
    repos = sorted(p for p in (cache / MODELS_DIR).glob("*") if p.is_dir())
    repos += sorted(hf_cache.glob(f"models--{LEGACY_OWNER}--*"))
    expected_hf: dict[Path, str] = {}
    try:
        for e in load_manifest().values():
            for s in e.get("sources", []):
                if s["type"] == "huggingface":
                    folder = hf_repo_folder(hf_cache, s["repo_id"])
                    repos.append(folder)
                    expected_hf[folder / "snapshots" / s["revision"] / WEIGHTS_NAME] = s["sha256"]
    except ManifestError as exc:
        logger.warning("%s", exc)
    results: list[CacheCheck] = []
    for repo in dict.fromkeys(repos):
        if repo.is_dir():
            results += _verify_repo(repo, expected_hf)
    return results


def _verify_repo(repo: Path, expected_hf: dict[Path, str]) -> list[CacheCheck]:
    results: list[CacheCheck] = []
    for blob in sorted((repo / "blobs").glob("*")):
        if blob.name.endswith(".incomplete") or not blob.is_file():
            continue
        if len(blob.name) == 64:
            got = _download.sha256_file(blob)
        elif len(blob.name) == 40:
            got = _download.git_blob_sha1_file(blob)
        else:
            continue
        results.append(CacheCheck(blob, got == blob.name, blob.name, got))
    for snap in sorted(d for d in (repo / "snapshots").glob("*") if d.is_dir()):
        for name in (CONFIG_NAME, WEIGHTS_NAME):  # what loading reads: a snapshot without one is not a model
            if not (snap / name).is_symlink() and not (snap / name).exists():
                results.append(CacheCheck(snap / name, False, "a snapshot file", "missing"))
    for f in sorted((repo / "snapshots").glob("*/*")):
        if f.is_symlink() and not f.exists():
            results.append(CacheCheck(f, False, "existing blob", "broken link"))
        elif f in expected_hf:
            got = _download.sha256_file(f)
            results.append(CacheCheck(f, got == expected_hf[f], expected_hf[f], got))
        elif not f.is_symlink() and f.is_file():  # a copied (not linked) snapshot file: it must equal a blob
            got = content_hash(f, f.name)
            results.append(CacheCheck(f, (repo / "blobs" / got).is_file(), "a blob of the same content", got))
    return results
