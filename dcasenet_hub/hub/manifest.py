"""The weights manifest: which model ids exist, where their weights come from and how to verify them.

The packaged ``weights_manifest.json`` is merged with the file named by ``DCASENET_HUB_MANIFEST`` (read at call
time; its entries add to or replace the packaged ones). The schema is documented in docs/weights.md and checked by
:func:`validate_manifest`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from dcasenet_hub import _env
from dcasenet_hub.config import ARCHS, HEAD_TASKS
from dcasenet_hub.errors import ManifestError

SCHEMA_VERSION = 1
PACKAGED = Path(__file__).with_name("weights_manifest.json")

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A Hugging Face repo id, ``org/name`` (the manifest's ``huggingface`` sources, ``from_pretrained``, ``push_to_hub``).
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_METRICS = ("scene_accuracy", "tag_lwlrap", "event_f1", "event_error_rate")

_ENTRY_KEYS = {
    "description": str, "arch": str, "trained_tasks": list, "trained_on": list, "sources": list,
    "license": (str, type(None)), "citation": (str, type(None)), "metrics": (dict, type(None)),
}
_ENTRY_OPTIONAL = {"unavailable": str, "notes": str}
_SOURCE_KEYS = {
    "github": {"type": str, "repo": str, "commit": str, "path": str, "url": str, "git_blob_sha1": str},
    "url": {"type": str, "url": str, "git_blob_sha1": str},
    "huggingface": {"type": str, "repo_id": str, "revision": str, "sha256": str},
}


def _check_entry(mid: str, e: Any, problems: list[str]) -> None:
    where = f"models[{mid!r}]"
    if not isinstance(e, dict):
        problems.append(f"{where}: must be an object")
        return
    if "alias_of" in e:
        extra = sorted(set(e) - {"alias_of", "description"})
        if extra:
            problems.append(f"{where}: an alias has only 'alias_of' and 'description'; remove {extra}")
        if not isinstance(e["alias_of"], str):
            problems.append(f"{where}.alias_of: must be a model id")
        return
    for key, typ in _ENTRY_KEYS.items():
        if key not in e:
            problems.append(f"{where}: missing '{key}'")
        elif not isinstance(e[key], typ):
            problems.append(f"{where}.{key}: wrong type {type(e[key]).__name__}")
    unknown = sorted(set(e) - set(_ENTRY_KEYS) - set(_ENTRY_OPTIONAL))
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}")
    if e.get("arch") not in ARCHS:
        problems.append(f"{where}.arch: {e.get('arch')!r} is not one of {list(ARCHS)}")
    for t in e.get("trained_tasks") or []:
        if t not in HEAD_TASKS:
            problems.append(f"{where}.trained_tasks: {t!r} is not one of {list(HEAD_TASKS)}")
    for i, d in enumerate(e.get("trained_on") or []):
        if not (isinstance(d, dict) and {"task", "dataset", "split"} <= set(d)):
            problems.append(f"{where}.trained_on[{i}]: needs 'task', 'dataset' and 'split'")
    metrics = e.get("metrics")
    if isinstance(metrics, dict):
        if not isinstance(metrics.get("reported_in"), str):
            problems.append(f"{where}.metrics.reported_in: say where the numbers come from")
        values = metrics.get("values")
        if not isinstance(values, dict) or not values:
            problems.append(f"{where}.metrics.values: must be a non-empty object")
        else:
            for k, v in values.items():
                if k not in _METRICS:
                    problems.append(f"{where}.metrics.values: unknown metric {k!r} (known: {list(_METRICS)})")
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    problems.append(f"{where}.metrics.values.{k}: must be a finite number")
    sources = e.get("sources")
    if isinstance(sources, list):
        if not sources and not isinstance(e.get("unavailable"), str):
            problems.append(f"{where}: an entry without sources needs 'unavailable' (why, and how to get weights)")
        for i, s in enumerate(sources):
            _check_source(f"{where}.sources[{i}]", s, problems)


def _check_source(where: str, s: Any, problems: list[str]) -> None:
    if not isinstance(s, dict) or s.get("type") not in _SOURCE_KEYS:
        problems.append(f"{where}: must be an object with type one of {sorted(_SOURCE_KEYS)}")
        return
    spec = _SOURCE_KEYS[s["type"]]
    for key, typ in spec.items():
        if not isinstance(s.get(key), typ):
            problems.append(f"{where}: missing or non-string '{key}'")
    unknown = sorted(set(s) - set(spec) - {"size", "format"})
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}")
    if "git_blob_sha1" in spec and not _SHA1_RE.match(str(s.get("git_blob_sha1"))):
        problems.append(f"{where}.git_blob_sha1: must be 40 lowercase hex digits")
    if "url" in spec and not str(s.get("url", "")).startswith(("https://", "http://")):
        problems.append(f"{where}.url: must be an http(s) URL")
    if s["type"] == "github":
        if not _SHA1_RE.match(str(s.get("commit"))):
            problems.append(f"{where}.commit: must be a full 40-digit commit hash")
        want = f"https://github.com/{s.get('repo')}/raw/{s.get('commit')}/{s.get('path')}"
        if s.get("url") != want:
            problems.append(f"{where}.url: must be {want}")
    if s["type"] == "huggingface":
        if not HF_REPO_RE.match(str(s.get("repo_id"))):
            problems.append(f"{where}.repo_id: must look like org/name")
        if not _SHA1_RE.match(str(s.get("revision"))):
            problems.append(f"{where}.revision: must be a pinned 40-digit commit hash")
        if not _SHA256_RE.match(str(s.get("sha256"))):
            problems.append(f"{where}.sha256: must be the 64-digit sha256 of model.safetensors")
    if "size" in s and not (isinstance(s["size"], int) and s["size"] > 0):
        problems.append(f"{where}.size: must be a positive integer (bytes)")


def validate_manifest(data: Any, *, source: str = "manifest") -> dict[str, dict[str, Any]]:
    """Check ``data`` against the schema and return its ``models`` mapping.

    Raises:
        ManifestError: listing every problem found, with ``source`` (the file) in the message.

    Example:
        >>> validate_manifest({"schema_version": 1, "models": {}})
        {}
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the manifest must be a JSON object with 'schema_version' and 'models'")
    if data.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    unknown = sorted(set(data) - {"schema_version", "models", "$comment"})
    if unknown:
        problems.append(f"unknown top-level keys {unknown}")
    models = data.get("models")
    if not isinstance(models, dict):
        problems.append("'models' must be an object mapping model id -> entry")
        models = {}
    for mid, entry in models.items():
        if not _ID_RE.match(mid):
            problems.append(f"model id {mid!r}: use lowercase letters, digits, '.', '_' and '-'")
        _check_entry(mid, entry, problems)
    if problems:
        raise ManifestError(f"{source} is not a valid weights manifest (docs/weights.md):\n  " + "\n  ".join(problems))
    return models


def _read(path: Path) -> Any:
    from dcasenet_hub._io import read_regular

    try:
        return json.loads(read_regular(path))  # a FIFO or /dev/zero is refused, not read
    except OSError as exc:
        raise ManifestError(f"Cannot read weights manifest {path}: {exc}") from exc
    except ValueError as exc:  # bad JSON or not UTF-8
        raise ManifestError(f"Weights manifest {path} is not valid JSON: {exc}") from exc


def load_manifest() -> dict[str, dict[str, Any]]:
    """The packaged manifest merged with ``DCASENET_HUB_MANIFEST`` (read now), validated, aliases checked."""
    models = dict(validate_manifest(_read(PACKAGED), source=str(PACKAGED)))
    path = _env.extra_manifest()
    if path is not None:
        models.update(validate_manifest(_read(path), source=f"DCASENET_HUB_MANIFEST={path}"))
    for mid, e in models.items():
        target = e.get("alias_of")
        if target is not None and (target not in models or "alias_of" in models[target]):
            raise ManifestError(f"Manifest alias {mid!r} points to {target!r}, which is not a (non-alias) model id")
    return models
