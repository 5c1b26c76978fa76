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
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME
from dcasenet_hub.errors import DownloadError, ModelError, ModelLoadError
from dcasenet_hub.hub.checkpoint import check_model_path, content_sha256
from dcasenet_hub.inference.options import InferenceOptions
from dcasenet_hub.inference.outputs import read_meta

#: Files of a model folder whose content identifies the weights (other files, e.g. the README card, do not count).
_MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)
#: Longest file name (bytes) this package writes: the limit of common file systems (ext4, XFS, APFS, NTFS).
NAME_MAX = 255
#: Hex digits of the name's SHA-256 that end a shortened output name.
SHORT_HASH_CHARS = 16
#: Settings recorded since a later version, with the value files written before them hold.
_META_DEFAULTS: dict[str, Any] = {"pooling": "mean", "layer": "gru", "hop": None, "dtype": "fp32", "backend": "torch"}


def output_stem(stem: str, longest_suffix: str) -> str:
    """An output name's stem that keeps ``stem + longest_suffix`` within :data:`NAME_MAX` bytes.

    A stem that fits is kept. A longer one becomes its first bytes (cut at a character boundary), ``~`` and the
    first :data:`SHORT_HASH_CHARS` hex digits of the SHA-256 of the whole stem's bytes: names that differ only after
    the cut stay different, and the same input always gets the same name.

    Example:
        >>> output_stem("a", ".npz")
        'a'
        >>> len(output_stem("x" * 300, ".events.csv").encode()) + len(".events.csv")
        255
    """
    raw = os.fsencode(stem)
    if len(raw) + len(longest_suffix) <= NAME_MAX:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:SHORT_HASH_CHARS]
    cut = raw[: NAME_MAX - len(longest_suffix) - 1 - SHORT_HASH_CHARS]
    while cut and cut[-1] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back off to the character's start
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:  # the first byte of a character whose rest was cut
        cut = cut[:-1]
    return f"{os.fsdecode(cut)}~{digest}"


#: Per-input event file of each ``event_formats`` value: role in :func:`outputs_for` and file name ending.
EVENT_FILES = {"dcase": ("events", ".events.csv"), "raven": ("raven", ".Table.1.selections.txt"),
               "audacity": ("audacity", ".labels.txt")}


def outputs_for(out_dir: str | Path, rel: PurePosixPath, task: str,
                event_formats: tuple[str, ...] = ("dcase",)) -> dict[str, Path]:
    """Output files of an input by role: ``{"main": x.npz}`` (embed) or the event files of ``event_formats``
    (``events``, ``raven``, ``audacity``: :data:`EVENT_FILES`), ``scores`` and ``main`` (.json).

    A name that would pass :data:`NAME_MAX` bytes is shortened (:func:`output_stem`).

    Example:
        >>> outputs_for("emb", PurePosixPath("street/a.wav"), "embed")
        {'main': PosixPath('emb/street/a.npz')}
        >>> sorted(outputs_for("pred", PurePosixPath("a.wav"), "predict", ("dcase", "raven")))
        ['events', 'main', 'raven', 'scores']
    """
    base = Path(out_dir) / Path(*rel.with_suffix("").parts)
    if task == "embed":
        stem = output_stem(base.name, ".npz")
        return {"main": base.with_name(stem + ".npz")}
    # the longest ending any format may add: the same input keeps its name whichever formats are asked for
    stem = output_stem(base.name, max((e for _, e in EVENT_FILES.values()), key=len))
    events = {EVENT_FILES[f][0]: base.with_name(stem + EVENT_FILES[f][1]) for f in event_formats}
    return {**events, "scores": base.with_name(stem + ".scores.tsv"), "main": base.with_name(stem + ".json")}


def sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of a file's bytes (``None`` if unreadable): :func:`~dcasenet_hub.hub.fetch.sha256_file`, which
    ``events.csv`` checks these digests with."""
    from dcasenet_hub.hub.fetch import sha256_file

    try:
        return sha256_file(Path(path))
    except OSError:
        return None


def _files_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _folder_sha256(folder: Path) -> str:
    """:func:`_content_sha256` of a model folder, read without building the network: the same folder converted or
    saved under another name (its ``model_id``, the safetensors header that embeds the config) is the same model.
    A folder that cannot be read so is fingerprinted by its files' bytes (loading it then says what is wrong)."""
    from safetensors import SafetensorError, safe_open

    from dcasenet_hub.config import ModelConfig
    from dcasenet_hub.hub.folder import current_file

    try:
        config = ModelConfig.load(current_file(folder, CONFIG_NAME))
        with safe_open(str(current_file(folder, WEIGHTS_NAME)), framework="pt") as f:
            return content_sha256(config, ((k, f.get_tensor(k)) for k in f.keys()))
    except (OSError, ValueError, SafetensorError):
        return _files_sha256(_folder_files(folder))


def _folder_files(folder: Path) -> list[Path]:
    """The model files as loading will read them: those of a commit a killed writer left are already the folder's."""
    from dcasenet_hub.hub.folder import current_file

    return [path for path in (current_file(folder, f) for f in _MODEL_FILES) if path.is_file()]


def _named_folder(name: str) -> Path | None:
    """The cached folder a manifest id or Hugging Face repo id loads from (fetched if needed); ``None`` otherwise."""
    from dcasenet_hub.hub.api import download, hf_cache_location
    from dcasenet_hub.hub.manifest import HF_REPO_RE, load_manifest
    from dcasenet_hub.hub.sources import fetch_hf

    if name in load_manifest():
        return download(name, progress=False)
    if HF_REPO_RE.match(name) and not name.endswith((".pt", ".pth", ".safetensors")):
        return fetch_hf(name, revision=None, cache=hf_cache_location(None), local_files_only=False)
    return None


def model_identity(name: str | Path) -> dict[str, Any]:
    """What resume compares to tell whether outputs came from these weights: their content, never their name.

    ``model_sha256`` is a SHA-256 of the bytes that loading reads: a local folder's ``config.json`` and
    ``model.safetensors`` (in that order), a local file's bytes, or, for a manifest id or a Hugging Face repo id,
    the same two files of the cached folder it loads from (fetched first if needed). So weights copied over the old
    ones, or an id re-pointed to other weights (``DCASENET_HUB_MANIFEST``), are seen. Another name (no file, no
    known id) gives ``model_sha256`` ``None``: no earlier output matches, and loading the model says what is wrong.

    Raises:
        ModelError, DownloadError: a manifest or Hugging Face id that cannot be fetched (offline and not cached, a
            failed download or checksum, a repo without the model files), as loading it would.

    Example:
        >>> model_identity("dcasenet-v3")["model"]                                   # doctest: +SKIP
        'dcasenet-v3'
    """
    check_model_path(name)  # a FIFO or device is refused before it is read to fingerprint it
    p = Path(name).expanduser()
    if p.exists():
        return {"model": str(p.resolve()), "model_sha256": _folder_sha256(p) if p.is_dir() else _files_sha256([p])}
    try:
        folder = _named_folder(str(name))
    except (ModelError, DownloadError):
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # e.g. a repo id the Hub does not have
        raise ModelLoadError(str(name), exc) from None
    if folder is None:
        return {"model": str(name), "model_sha256": None}
    return {"model": str(name), "model_sha256": _folder_sha256(Path(folder))}


def check_unchanged(name: str | Path, planned: str | None) -> None:
    """Refuse to record outputs under a fingerprint of other weights than those loaded.

    A named model is fingerprinted (:func:`model_identity`) before it is loaded: weights copied over it in between
    would otherwise be recorded as the old ones, and a later run with the old weights would skip their outputs.

    Args:
        name: The model as it was named.
        planned: Its ``model_sha256`` before loading (``None``: unresolved then, so no later run matches anyway).

    Raises:
        ModelError: the model's files changed between fingerprinting and loading.
    """
    if planned is not None and model_identity(name)["model_sha256"] != planned:
        raise ModelError(f"the weights of {name} changed while the job started (its files were replaced between "
                         "fingerprinting and loading); nothing was computed: run the command again")


def loaded_identity(model: Any) -> dict[str, Any]:
    """:func:`model_identity` of a loaded model: a SHA-256 of its config (less ``model_id``) and every tensor.

    Example:
        >>> loaded_identity(model)["model_sha256"][:8]                               # doctest: +SKIP
        '3f2a9c01'
    """
    config = getattr(model, "config", None)
    if not hasattr(model, "state_dict"):  # not a network (a stand-in): its name is all there is
        return {"model": getattr(config, "model_id", None)}
    return {"model": getattr(config, "model_id", None),
            "model_sha256": content_sha256(config, model.state_dict().items())}


def source_identity(path: str | Path) -> dict[str, Any]:
    """Which input file an output is of (its resolved path), and its content: size and SHA-256.

    Resume recomputes the outputs of an input whose bytes changed, whatever its dates say (a file copied over with
    its modification time kept), keeps those of one only touched, and never takes another input's output for this
    one's. The input is hashed before it is decoded, so a file that changes while it is processed is recomputed by
    the next run. An unreadable input, or one that is not a regular file, gets ``source_sha256`` ``None``, which
    matches no output.
    """
    from dcasenet_hub.batch.journal import input_key

    try:
        st = Path(path).stat()
    except OSError:
        return {}
    digest = sha256(path) if stat.S_ISREG(st.st_mode) else None  # a FIFO or device would block or never end
    return {"source_key": input_key(path), "source_size": st.st_size, "source_sha256": digest}


def holder(output: Path) -> str | None:
    """The input (its :func:`~dcasenet_hub.batch.journal.input_key`) whose result the main output file ``output``
    holds, as the output records it; ``None`` for no output, a damaged one, or one of an older release."""
    found = read_meta(output) if output.is_file() else None
    owner = (found or {}).get("source_key")
    return owner if isinstance(owner, str) else None


def other_owner(item: Any) -> str | None:
    """The other input whose output ``item`` 's main output file holds, while that input still exists; else None.

    Two inputs of one run that would write one output are told apart when the run is planned; this tells them apart
    across runs into one folder (``in1/x.wav`` today, ``in2/x.wav`` tomorrow), from what the output records.
    """
    from dcasenet_hub.batch.journal import input_key

    owner = holder(item.outputs["main"])
    if (owner is not None and owner != input_key(item.path) and Path(owner).is_file()
            and os.path.realpath(owner) != os.path.realpath(item.path)):  # another name of this file is not another
        return owner
    return None


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
    if any(k in meta and meta[k] is None for k in ("model_sha256", "source_sha256")):  # could not be identified
        return False
    found = read_meta(item.outputs["main"])
    # the weights are compared by content: "model" (how they were named) is shown, not compared; outputs of older
    # releases do not say which input they are of
    compared = {k: v for k, v in meta.items()
                if (k != "model" or "model_sha256" not in meta) and (k != "source_key" or k in (found or {}))}
    if not found or any(found.get(k, _META_DEFAULTS.get(k)) != v for k, v in compared.items()):
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
    from dcasenet_hub.batch.journal import display

    stem = item.outputs["main"].name[: -len(".json")]
    for fmt, (role, ending) in EVENT_FILES.items():
        if role in item.outputs:
            pred.save_events(item.outputs[role], filename=display(item.rel.as_posix()), format=fmt)
        else:  # an earlier run's file of another --event-format: events of other settings, which no .json vouches for
            item.outputs["main"].with_name(stem + ending).unlink(missing_ok=True)
    pred.save_scores(item.outputs["scores"])
    # last: it records the settings and the digest of each other file, so resume can tell that all came from one run
    digests = {k: sha256(p) for k, p in item.outputs.items() if k != "main"}
    pred.save(item.outputs["main"], meta={**meta, "digests": digests})
