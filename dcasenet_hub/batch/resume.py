"""Resume: which outputs an input writes, and whether earlier outputs can be kept (same settings, weights, input).

Example:
    >>> from pathlib import PurePosixPath
    >>> from dcasenet_hub.batch.resume import outputs_for, settings_meta
    >>> outputs_for("emb", PurePosixPath("street/a.wav"), "embed")
    {'main': PosixPath('emb/street/a.npz')}
    >>> settings_meta("embed", {"model": "dcasenet-v3"})["layer"]
    'gru'
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from dcasenet_hub.inference.options import InferenceOptions
from dcasenet_hub.inference.outputs import read_meta

#: Files of a model folder whose content identifies the weights (other files, e.g. the README card, do not count).
_MODEL_FILES = ("config.json", "model.safetensors")
#: Settings recorded since a later version, with the value files written before them hold.
_META_DEFAULTS: dict[str, Any] = {"pooling": "mean", "layer": "gru", "hop": None, "dtype": "fp32", "backend": "torch"}


def outputs_for(out_dir: str | Path, rel: PurePosixPath, task: str) -> dict[str, Path]:
    """Output files of an input by role: ``{"main": x.npz}`` (embed) or ``events``, ``scores``, ``main`` (.json).

    Example:
        >>> outputs_for("emb", PurePosixPath("street/a.wav"), "embed")
        {'main': PosixPath('emb/street/a.npz')}
    """
    base = Path(out_dir) / Path(*rel.with_suffix("").parts)
    if task == "embed":
        return {"main": base.with_name(base.name + ".npz")}
    return {"events": base.with_name(base.name + ".events.csv"),
            "scores": base.with_name(base.name + ".scores.tsv"),
            "main": base.with_name(base.name + ".json")}


def sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of a file's bytes (``None`` if unreadable)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def model_identity(name: str | Path) -> dict[str, Any]:
    """What resume compares to tell whether outputs came from these weights: their content, not file dates.

    A local checkpoint (folder, ``.safetensors`` or ``.pt`` file) is fingerprinted by a SHA-256 of its bytes (for
    a folder: of ``config.json`` and ``model.safetensors``, in that order), so weights copied over the old ones
    (same size, same folder date) are seen. A manifest id names published weights that are checked against their
    hash when fetched, so the id is the identity.

    Example:
        >>> model_identity("dcasenet-v3")
        {'model': 'dcasenet-v3'}
    """
    p = Path(name).expanduser()
    if not p.exists():
        return {"model": str(name)}
    files = [p / f for f in _MODEL_FILES if (p / f).is_file()] if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return {"model": str(p.resolve()), "model_sha256": h.hexdigest()}


def source_identity(path: str | Path) -> dict[str, Any]:
    """Size and modification time of an input file (resume recomputes outputs of a changed input)."""
    try:
        st = Path(path).stat()
        return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    except OSError:
        return {}


def settings_meta(task: str, model: dict[str, Any], options: InferenceOptions | None = None, *,
                  level: str = "both") -> dict[str, Any]:
    """The settings an output records for resuming (outputs are reused only when all of them match): the task, the
    weights, ``level`` (embed) and the options that change the task's results (:meth:`InferenceOptions.recorded`).

    The 0.8 s default hop and ``pad_tail=False`` are recorded as ``None``, the value files without them hold.

    Args:
        task: ``"embed"`` or ``"predict"``.
        model: :func:`model_identity` of the weights.
        options: The job's :class:`~dcasenet_hub.inference.InferenceOptions` (default: all defaults).
        level: Which embeddings an embed job saves.

    Example:
        >>> settings_meta("embed", {"model": "dcasenet-v3"})["hop"] is None
        True
    """
    recorded = (options or InferenceOptions()).recorded(task)
    if recorded["hop"] is not None and abs(recorded["hop"] - 0.8) < 1e-9:
        recorded["hop"] = None
    recorded["pad_tail"] = True if recorded["pad_tail"] else None
    return {"task": task, **model, **({"level": level} if task == "embed" else {}), **recorded}


def is_complete(item: Any, meta: dict[str, Any]) -> bool:
    """Whether ``item`` 's outputs all exist, match the settings ``meta`` and come from one run.

    The main file records the settings and the SHA-256 of each other output (written last), so outputs of an
    interrupted later run are not mixed with an earlier run's. Sets ``item.duration_s`` and ``item.warning`` from the
    record.
    """
    if not all(p.is_file() for p in item.outputs.values()):
        return False
    found = read_meta(item.outputs["main"])
    if not found or any(found.get(k, _META_DEFAULTS.get(k)) != v for k, v in meta.items()):
        return False
    digests = found.get("digests") or {}
    for key, path in item.outputs.items():
        if key != "main" and (key not in digests or sha256(path) != digests[key]):
            return False
    item.duration_s = found.get("duration_s")
    # a skipped input keeps the warning its outputs were made with (e.g. a truncated file), so the new index row
    # does not present it as clean
    item.warning = found.get("warning") or ""
    return True


def write_outputs(item: Any, result: Any, task: str, meta: dict[str, Any], *, level: str = "both") -> None:
    """Write one :class:`~dcasenet_hub.inference.Result` 's files (atomically), the main file last.

    The main file's ``meta`` also records ``item.warning`` (when there is one), which :func:`is_complete` gives back
    to a skipped input.
    """
    if getattr(item, "warning", ""):
        meta = {**meta, "warning": item.warning}
    if task == "embed":
        result.embeddings.save(item.outputs["main"], level=level, meta=meta)
        return
    pred = result.prediction
    pred.save_events(item.outputs["events"], filename=item.rel.as_posix())
    pred.save_scores(item.outputs["scores"])
    # last: it records the settings and the digest of each other file, so resume can tell that all came from one run
    digests = {k: sha256(item.outputs[k]) for k in ("events", "scores")}
    pred.save(item.outputs["main"], meta={**meta, "digests": digests})
