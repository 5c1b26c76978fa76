"""Checkpoint formats: the authors' ``.pt`` state dicts (read only), and config.json + model.safetensors + README.md.

The hub builds models only as ``cls(config)`` for the class it is given (default: the bare network,
:class:`dcasenet_hub.models.dcasenet.DcaseNetModule`); it never names the public model class.

Example:
    >>> from dcasenet_hub.models.dcasenet import DcaseNetModule
    >>> from dcasenet_hub.config import ModelConfig
    >>> import tempfile
    >>> d = save_pretrained(DcaseNetModule(ModelConfig(arch="v1")), tempfile.mkdtemp())
    >>> load_dir(d).config.arch
    'v1'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub._io import json_text, out_of_memory
from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_SHA256_KEY, normalise_arch
from dcasenet_hub.errors import ModelConfigError, ModelFileError, ModelNotFoundError
from dcasenet_hub.hub import fetch as _download
from dcasenet_hub.hub.cache import CARD_NAME
from dcasenet_hub.hub.manifest import ManifestError, load_manifest

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dcasenet_hub.config import ModelConfig
    from dcasenet_hub.models.dcasenet import DcaseNetModule

#: The one safetensors metadata key: the model's config.json, so a lone .safetensors file loads with its config.
CONFIG_META_KEY = "dcasenet_hub_config"


def serialize(model: DcaseNetModule, *, repo_id: str | None = None) -> dict[str, bytes]:
    """The three files of a saved model, as bytes; ``config.json`` records the sha256 of ``model.safetensors``."""
    from safetensors.torch import save

    from dcasenet_hub.hub.card import render_model_card

    config = model.config.to_dict()
    config_json = json_text(config, indent=2) + "\n"  # standard JSON: a NaN in free-form extra becomes null
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes metadata in hash-map order, so two keys made the bytes (and the
    # sha256 of a conversion) differ from run to run
    weights = save(tensors, metadata={CONFIG_META_KEY: config_json})
    # the file's config names the weights it belongs with: a config beside other weights is refused on load
    config[WEIGHTS_SHA256_KEY] = hashlib.sha256(weights).hexdigest()
    card = render_model_card(model.config, num_parameters=model.num_parameters(), repo_id=repo_id)
    return {CONFIG_NAME: (json_text(config, indent=2) + "\n").encode(), WEIGHTS_NAME: weights,
            CARD_NAME: card.encode()}


def save_pretrained(model: DcaseNetModule, save_directory: str | Path, *, repo_id: str | None = None,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card into ``save_directory``.

    The files are written as one unit (:mod:`dcasenet_hub.hub.folder`): after a kill at any instant the folder
    holds the complete old model or the complete new one. ``config.json`` records the sha256 of the weights, so
    a config beside other weights is refused on load. The folder loads back with :func:`from_pretrained` and is
    what :func:`push_to_hub` uploads.

    Args:
        model: The model to save.
        save_directory: Target folder (created if needed; files of the same names are replaced, others kept).
        repo_id: Hugging Face repo id to show in the card's usage example.
        extra_files: More files (name -> bytes) written in the same unit, e.g. fine-tuning's ``metrics.jsonl``.

    Returns:
        The folder.

    Example:
        >>> from dcasenet_hub.models.dcasenet import DcaseNetModule
        >>> from dcasenet_hub.config import ModelConfig
        >>> import tempfile
        >>> d = save_pretrained(DcaseNetModule(ModelConfig(arch="v3")), tempfile.mkdtemp())
        >>> sorted(p.name for p in d.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
    from dcasenet_hub.hub.folder import write_files

    runtime = getattr(model, "runtime", None)
    refusal = runtime.cannot_save() if runtime is not None else None
    if refusal:
        raise RuntimeError(refusal)
    files = serialize(model, repo_id=repo_id)
    for name in extra_files or {}:
        if name in files:
            raise ValueError(f"extra_files may not replace {name}, a file of the model itself")
    return write_files(Path(save_directory).expanduser(), {**files, **(extra_files or {})})


def content_sha256(config: Any, tensors: Any) -> str:
    """SHA-256 of what a model computes with: its config less ``model_id`` (a name) and every named tensor, in name
    order; the identity of weights wherever the package records which model made something.

    Args:
        config: A :class:`~dcasenet_hub.config.ModelConfig` (or None: the tensors alone).
        tensors: ``(name, tensor)`` pairs, e.g. ``model.state_dict().items()``.

    Example:
        >>> import torch
        >>> content_sha256(None, [("w", torch.zeros(2))]) == content_sha256(None, {"w": torch.zeros(2)}.items())
        True
    """
    import torch

    h = hashlib.sha256()
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k != "model_id"}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode("utf-8"))
    for key, tensor in sorted(tensors, key=lambda kv: kv[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"\0{key}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def infer_arch(keys: set[str], shapes: dict[str, tuple[int, ...]]) -> str:
    if "conv_block4_1.conv1.weight" in keys:
        return "v3"
    w = shapes.get("asc_block.conv1.weight")
    if w is not None:
        return "v1" if len(w) == 3 else "v2"
    raise ValueError(
        "Cannot tell the DcaseNet architecture from the checkpoint's keys (no conv_block4_1 / asc_block): "
        "is it a DcaseNet state_dict? Pass it to convert_checkpoint(..., arch=...) to name the architecture."
    )


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does: an 8-byte header length, then its JSON header."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def read_authors_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an authors'-format ``torch.save(state_dict)`` file, read with ``weights_only=True`` onto the CPU."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch raises many types (UnpicklingError, RuntimeError, ...)
        if out_of_memory(exc):  # a readable checkpoint on a machine without the memory for it
            raise
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive (old format: a pickle)
            why = "it is neither a zip archive nor a pickle"
        else:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = (f"it cannot be read as a PyTorch state_dict with weights_only=True ({type(exc).__name__}: "
                   f"{lines[0] if lines else ''})")
        raise ModelFileError(
            f"{path} is not a model checkpoint: {why}. Expected a manifest id (see `dcasenet-hub list`), a folder with "
            "config.json + model.safetensors, a .safetensors file or an authors' .pt file (torch.save(state_dict)); "
            "no code from a checkpoint is ever executed."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _manifest_match(git_sha1: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    try:
        models = load_manifest()
    except ManifestError:
        return None
    for mid, e in models.items():
        for s in e.get("sources", []):
            if s.get("git_blob_sha1") == git_sha1:
                return mid, e, s
    return None


def official_config(model_id: str, entry: dict[str, Any], source: dict[str, Any]) -> ModelConfig:
    from dcasenet_hub.config import ModelConfig

    if source["type"] == "github":
        origin = f"authors' checkpoint {source['path']}@{source['commit']}"
    else:
        origin = f"checkpoint {source['url']}"
    return ModelConfig(
        arch=entry["arch"],
        trained_tasks=tuple(entry["trained_tasks"]),
        model_id=model_id,
        provenance=f"{origin} (git blob sha1 {source['git_blob_sha1']}), converted to safetensors by dcasenet-hub",
        extra={
            "description": entry["description"], "license": entry["license"], "citation": entry["citation"],
            "metrics": entry["metrics"], "trained_on": entry["trained_on"],
            "source": {"url": source["url"], "git_blob_sha1": source["git_blob_sha1"]},
        },
    )


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path | None = None,
    *,
    arch: str | None = "v3",
    trained_tasks: Sequence[str] | None = None,
    model_id: str | None = None,
    overwrite: bool = False,
    cls: type[DcaseNetModule] | None = None,
) -> DcaseNetModule:
    """Load an authors'-format checkpoint (``torch.save(state_dict)``) strictly; optionally save it converted.

    A file whose git blob SHA-1 is one of the manifest's official files gets that entry's metadata (tasks,
    metrics, license, citation); any other file gets ``trained_tasks`` (default none) and a provenance that says
    what is known.

    Args:
        checkpoint: The ``.pt`` file (read with ``torch.load(weights_only=True, map_location="cpu")``).
        output_dir: If given, write ``config.json`` + ``model.safetensors`` + ``README.md`` there.
        arch: Architecture; ``None`` infers it from the keys.
        trained_tasks: Heads that were trained (for files not in the manifest).
        model_id: Id recorded in the config and used as the card's title (default: the manifest id, else the
            name of ``output_dir``, else the file path).
        overwrite: Replace a model already in ``output_dir`` (as ``finetune``); without it such a folder is refused.

    Returns:
        The loaded model in eval mode.

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped keys (all listed).
        FileExistsError: ``output_dir`` already holds a model and ``overwrite`` is False.

    Example:
        >>> convert_checkpoint("best_ASC.pt", "dcasenet-v3-local/", arch="v3")   # doctest: +SKIP
    """
    from dcasenet_hub.config import ModelConfig

    path = Path(checkpoint).expanduser()
    loads_as_is = (f"load it as it is (from_pretrained('{path}'), --model {path}); convert reads an authors' .pt "
                   "checkpoint (torch.save(state_dict))")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder: {loads_as_is}")
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such file; convert reads an authors' .pt checkpoint "
                                 "(torch.save(state_dict))")
    if _is_safetensors(path):  # torch.load reads these too, but without the config the file carries
        raise ModelFileError(f"{path} is a safetensors file, already converted: {loads_as_is}")
    if output_dir is not None and Path(output_dir).expanduser().exists() and not Path(output_dir).expanduser().is_dir():
        raise NotADirectoryError(f"{output_dir} is an existing file; the output must be a folder (it is created if "
                                 "missing)")
    if output_dir is not None and not overwrite:
        existing = [n for n in ("config.json", "model.safetensors") if (Path(output_dir).expanduser() / n).exists()]
        if existing:
            raise FileExistsError(f"{output_dir} already holds a model ({', '.join(existing)}); choose another "
                                  "output folder or pass overwrite=True (--overwrite)")
    state = read_authors_checkpoint(path)
    sha1 = _download.git_blob_sha1_file(path)
    match = _manifest_match(sha1)
    if match is not None:
        mid, entry, source = match
        config = official_config(model_id or mid, entry, source)
        if arch is not None and normalise_arch(arch) != config.arch:
            raise ValueError(f"{path} is the official {mid} checkpoint, a DcaseNet-{config.arch}, not {arch}")
    else:
        a = (normalise_arch(arch) if arch else
             infer_arch(set(state), {k: tuple(v.shape) for k, v in state.items()}))
        config = ModelConfig(
            arch=a,
            trained_tasks=tuple(trained_tasks or ()),
            model_id=model_id or (Path(output_dir).expanduser().resolve().name if output_dir is not None
                                  else str(path)),
            provenance=(f"authors'-format checkpoint {path.name} (git blob sha1 {sha1}; not a file of the weights "
                        "manifest, " + (f"trained for {', '.join(trained_tasks)} as the user stated" if trained_tasks
                                        else "so its training is unknown")
                        + "), converted to safetensors by dcasenet-hub"),
        )
    if output_dir is None:  # nothing is written: say so instead of "converted"
        import dataclasses

        config = dataclasses.replace(config, provenance=config.provenance.replace(
            "converted to safetensors by dcasenet-hub", "read by dcasenet-hub (not converted)"))
    model = build_loaded(cls, config, state, source=str(path))
    model.eval()
    if output_dir is not None:
        save_pretrained(model, output_dir)
    return model


def build_loaded(cls: type[DcaseNetModule] | None, config: ModelConfig, state: dict[str, Any], *,
                 source: str) -> DcaseNetModule:
    """``cls(config)`` (default: the bare network) holding exactly the tensors of ``state``.

    The model is built on the ``meta`` device, so no random initialisation runs for the loaded weights to overwrite
    (most of the time of a load otherwise); ``load_state_dict_strict`` then takes the tensors and refuses any missing,
    unexpected or mis-shaped key.
    """
    import torch

    with torch.device("meta"):
        model = _model_class(cls)(config)
    model.load_state_dict_strict(state, source=source, assign=True)
    return model


def _model_class(cls: type[DcaseNetModule] | None) -> type[DcaseNetModule]:
    """The class to build: the caller's (``DcaseNet.from_pretrained`` passes its own), else the bare network."""
    if cls is not None:
        return cls
    from dcasenet_hub.models.dcasenet import DcaseNetModule

    return DcaseNetModule


def load_safetensors(path: Path, config: ModelConfig | None, cls: type[DcaseNetModule] | None = None, *,
                     data: bytes | None = None) -> DcaseNetModule:
    """Build a model from the safetensors file ``path`` (or its bytes ``data``, already read) and ``config``.

    Without ``config``, the config the file carries in its metadata is used, else the architecture is inferred.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from dcasenet_hub.config import ModelConfig

    try:
        if data is None:
            data = read_regular(path)
        state = load(data)
        meta = safetensors_metadata(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"Cannot read {path} as safetensors ({exc}); delete it and download again") from exc
    if config is None and meta.get(CONFIG_META_KEY):
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_META_KEY]))
    if config is None:
        arch = infer_arch(set(state), {k: tuple(v.shape) for k, v in state.items()})
        config = ModelConfig(arch=arch, model_id=str(path),
                             provenance=f"{path} (no config: architecture inferred from its keys)")
    return build_loaded(cls, config, state, source=str(path))


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header, from its bytes (``{}`` when it has none)."""
    import struct

    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("its header is longer than the file")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_regular(path: Path) -> bytes:
    """The bytes of a model file, refused at once (before reading) when it is not a regular file (a FIFO, a device).

    Raises:
        ModelFileError: not a regular file.
    """
    from dcasenet_hub._io import read_regular as read
    from dcasenet_hub.errors import NotRegularFileError

    try:
        return read(path)
    except NotRegularFileError as exc:
        raise ModelFileError(f"{exc}; {MODEL_FORMS}") from None


#: What can be given as a model, for messages that refuse something else.
MODEL_FORMS = ("a model is a manifest id (see `dcasenet-hub list`), a folder with config.json + model.safetensors, "
               "a .safetensors file or an authors' .pt file")


def check_model_path(name: str | os.PathLike[str]) -> None:
    """Refuse at once a model name that is an existing path but neither a folder nor a regular file.

    Nothing is read: ``/dev/zero`` or a FIFO given as a model fails here instead of hanging whatever would read
    it first (e.g. fingerprinting it).

    Raises:
        ModelFileError: a FIFO, device or socket.
    """
    import stat

    from dcasenet_hub._io import file_kind

    path = Path(os.fspath(name)).expanduser()
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # not a path (a manifest id), or missing: reported where it is resolved
        return
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise ModelFileError(f"{path} is {file_kind(mode)}, not a model file; {MODEL_FORMS}")


def load_dir(folder: Path, cls: type[DcaseNetModule] | None = None, *,
             verified_sha256: str | None = None) -> DcaseNetModule:
    """Load a model folder; its ``config.json`` and ``model.safetensors`` must belong together.

    A commit a killed writer left is finished first (:mod:`dcasenet_hub.hub.folder`). A config that records the
    weights' sha256 (every writer of this package records it) must match the weights it sits beside; a config
    without it (older folders) must name the architecture and labels the weights carry in their metadata.
    ``verified_sha256``: the weights' sha256 as the caller just verified it (a cache blob named by its hash), so
    they are not hashed a second time.

    Raises:
        ModelFileError: config and weights do not belong together (the message names both and the fix).
        ModelConfigError: a config field out of range.
    """
    from dcasenet_hub.config import ModelConfig
    from dcasenet_hub.hub.folder import current_file, settle

    folder = Path(folder)
    settle(folder)  # a read-only folder: current_file reads a pending commit's files
    weights = current_file(folder, WEIGHTS_NAME)
    if not weights.exists():
        raise ModelNotFoundError(
            f"{folder} has no {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME} "
            "(write one with model.save_pretrained(folder) or `dcasenet-hub convert`)"
        )
    cfg = current_file(folder, CONFIG_NAME)
    if not cfg.exists():
        return load_safetensors(weights, None, cls)
    try:
        raw = json.loads(read_regular(cfg))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"Cannot read model config {cfg}: {exc}") from None
    try:
        config = ModelConfig.from_dict(raw)
    except ModelConfigError as exc:
        raise exc.with_source(cfg) from None
    recorded = raw.get(WEIGHTS_SHA256_KEY) if isinstance(raw.get(WEIGHTS_SHA256_KEY), str) else None
    data = read_regular(weights)
    if verified_sha256 is not None and recorded == verified_sha256:
        recorded = None  # checked: the recorded hash is the verified one; what is left is the metadata check
    check_belong(cfg, config, recorded, weights, data)
    return load_safetensors(weights, config, cls, data=data)


def check_belong(cfg: Path, config: ModelConfig, recorded: str | None, weights: Path, data: bytes) -> None:
    """Raise :class:`ModelFileError` unless the config of ``cfg`` and the weights ``data`` belong together."""
    fix = ("The folder was changed or only partly copied after it was written: write it again "
           "(save_pretrained, `dcasenet-hub convert`, `finetune --overwrite`) or restore both files from one copy")
    if recorded is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != recorded:
            raise ModelFileError(f"{cfg} and {weights} do not belong together: the config records weights with "
                                 f"sha256 {recorded}, the weights beside it have sha256 {got}. {fix}")
        return
    try:
        meta = safetensors_metadata(data).get(CONFIG_META_KEY)
        own = json.loads(meta) if meta else None
    except ValueError:
        own = None
    if not isinstance(own, dict):
        return  # weights without a config of their own: nothing to compare
    for key in ("arch", "scene_labels", "tag_labels", "event_labels"):
        mine = getattr(config, key)
        theirs = own.get(key)
        if (list(mine) if isinstance(mine, tuple) else mine) != theirs:
            raise ModelFileError(f"{cfg} and {weights} do not belong together: {key} is {mine!r} in the config "
                                 f"but {theirs!r} in the weights' own metadata. {fix}")


def load_local(path: Path, cls: type[DcaseNetModule] | None = None) -> DcaseNetModule:
    check_model_path(path)
    if path.is_dir():
        return load_dir(path, cls)
    if path.suffix == ".safetensors":
        return load_safetensors(path, None, cls)
    return convert_checkpoint(path, arch=None, cls=cls)


