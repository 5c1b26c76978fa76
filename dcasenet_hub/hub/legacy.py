"""Official weights cached in the old layout (inside the Hugging Face cache): found, verified, moved once.

Those releases converted the authors' checkpoints into the Hugging Face cache under a made-up owner,
``<HF cache>/models--dcasenet-hub--<id>/`` (``blobs/``, ``snapshots/<sha1>/``, ``refs/main``), so
``huggingface-cli scan-cache`` listed Hub repos that do not exist. Now they belong in the package cache
(:func:`dcasenet_hub.hub.cache.cache_dir_location`). The first time such an entry is needed it is hashed in full (no
record is trusted), copied into ``<package cache>/models/<id>/`` and the old folder is removed, with one INFO log line
naming both paths. A damaged entry is not migrated: it is removed and the weights are fetched again. Where the
package cache cannot be written, the old entry is read in place (checked as any cached entry on load).

Example:
    >>> from pathlib import Path
    >>> legacy_snapshot("dcasenet-v3-joint-asc", "0" * 40, hf_cache=Path("/nonexistent")) is None
    True
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from dcasenet_hub.hub.cache import (
    SNAPSHOT_FILES,
    complete,
    damaged_snapshot,
    damaged_files,
    legacy_repo_folder,
    lock_path,
    prune,
    repo_folder,
    write_snapshot,
)

logger = logging.getLogger(__name__)


def legacy_snapshot(model_id: str, revision: str, *, hf_cache: Path) -> Path | None:
    """The complete snapshot an older release left for ``model_id`` at ``revision`` in ``hf_cache``, or None."""
    snap = legacy_repo_folder(hf_cache, model_id) / "snapshots" / revision
    return snap if complete(snap) else None


def adopt_legacy(model_id: str, revision: str, *, cache: Path, hf_cache: Path) -> tuple[Path | None, str | None]:
    """Use an older release's cache entry of ``model_id``: migrate it into ``cache`` (or read it in place).

    Args:
        model_id: Manifest id the weights are stored under.
        revision: The source's git blob SHA-1 (the snapshot name).
        cache: The package cache.
        hf_cache: The Hugging Face cache the older release wrote to.

    Returns:
        ``(snapshot, None)`` with the folder to load from; ``(None, None)`` when there is no old entry;
        ``(None, why)`` when the old entry is damaged (then it has been removed where possible).
    """
    old = legacy_snapshot(model_id, revision, hf_cache=hf_cache)
    if old is None:
        return None, None
    from filelock import FileLock

    try:  # the same lock as a download of this snapshot: one process migrates, the others find the result
        lock = FileLock(str(lock_path(cache, model_id, revision)))
        lock.acquire()
    except OSError as exc:
        return _in_place(model_id, old, cache, exc)
    try:
        new = repo_folder(cache, model_id) / "snapshots" / revision
        if complete(new):  # another process migrated it while this one waited
            return new, None
        if not complete(old):
            return None, None
        damage = damaged_snapshot(old)
        if damage is not None:
            logger.warning("%s; this entry of an older dcasenet-hub release is not migrated: it is removed and "
                           "fetched again", damage)
            _remove(old.parent.parent, hf_cache)
            return None, damage
        files = {name: (old / name).read_bytes() for name in SNAPSHOT_FILES}
        try:
            new = write_snapshot(repo_folder(cache, model_id), revision, files)
        except OSError as exc:
            prune(repo_folder(cache, model_id), cache)
            return _in_place(model_id, old, cache, exc)
        how = "moved" if _remove(old.parent.parent, hf_cache) else "copied (the old folder could not be removed)"
        logger.info("Migrated cached %s from %s to %s (%s; a one-time move out of the Hugging Face cache)",
                    model_id, old, new, how)
        return new, None
    finally:
        lock.release()


def _in_place(model_id: str, old: Path, cache: Path, exc: OSError) -> tuple[Path | None, str | None]:
    damage = damaged_files(old)
    if damage is not None:
        return None, damage
    logger.info("Cannot migrate cached %s from %s into %s (%s); reading it in place", model_id, old, cache, exc)
    return old, None


def _remove(repo: Path, hf_cache: Path) -> bool:
    """Remove an old entry's folder and its lock folder; False when the folder stays (e.g. a read-only cache)."""
    try:
        shutil.rmtree(repo)
    except OSError as exc:
        logger.debug("cannot remove %s (%s)", repo, exc)
        return False
    shutil.rmtree(hf_cache / ".locks" / repo.name, ignore_errors=True)  # its empty lock file; harmless if it stays
    return True
