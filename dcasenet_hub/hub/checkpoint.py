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

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME, normalise_arch
from dcasenet_hub.errors import ModelFileError, ModelNotFoundError
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
    """The three files of a saved model, as bytes."""
    from safetensors.torch import save

    from dcasenet_hub.hub.card import render_model_card

    config_json = json.dumps(model.config.to_dict(), indent=2) + "\n"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes metadata in hash-map order, so two keys made the bytes (and the
    # sha256 of a conversion) differ from run to run
    weights = save(tensors, metadata={CONFIG_META_KEY: config_json})
    card = render_model_card(model.config, num_parameters=model.num_parameters(), repo_id=repo_id)
    return {CONFIG_NAME: config_json.encode(), WEIGHTS_NAME: weights, CARD_NAME: card.encode()}


def save_pretrained(model: DcaseNetModule, save_directory: str | Path, *, repo_id: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card into ``save_directory``.

    Each file is written atomically. The folder loads back with :func:`from_pretrained` and is what
    :func:`push_to_hub` uploads.

    Args:
        model: The model to save.
        save_directory: Target folder (created if needed; files of the same names are replaced).
        repo_id: Hugging Face repo id to show in the card's usage example.

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
    from dcasenet_hub._io import atomic_write_bytes

    runtime = getattr(model, "runtime", None)
    refusal = runtime.cannot_save() if runtime is not None else None
    if refusal:
        raise RuntimeError(refusal)
    out = Path(save_directory).expanduser()
    for name, data in serialize(model, repo_id=repo_id).items():
        atomic_write_bytes(out / name, data)
    return out


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


def read_authors_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an authors'-format ``torch.save(state_dict)`` file, read with ``weights_only=True`` onto the CPU."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  torch raises many types (UnpicklingError, RuntimeError, ...)
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
    if not path.is_file():
        raise ModelNotFoundError(f"No checkpoint file {path}")
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
    model = model_class(cls)(config)
    model.load_state_dict_strict(state, source=str(path))
    model.eval()
    if output_dir is not None:
        save_pretrained(model, output_dir)
    return model


def model_class(cls: type[DcaseNetModule] | None) -> type[DcaseNetModule]:
    """The class to build: the caller's (``DcaseNet.from_pretrained`` passes its own), else the bare network."""
    if cls is not None:
        return cls
    from dcasenet_hub.models.dcasenet import DcaseNetModule

    return DcaseNetModule


def load_safetensors(path: Path, config: ModelConfig | None, cls: type[DcaseNetModule] | None = None
                      ) -> DcaseNetModule:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from dcasenet_hub.config import ModelConfig

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001  safetensors raises SafetensorError / OSError
        raise ModelFileError(f"Cannot read {path} as safetensors ({exc}); delete it and download again") from exc
    if config is None and meta.get(CONFIG_META_KEY):
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_META_KEY]))
    if config is None:
        arch = infer_arch(set(state), {k: tuple(v.shape) for k, v in state.items()})
        config = ModelConfig(arch=arch, model_id=str(path),
                             provenance=f"{path} (no config: architecture inferred from its keys)")
    import torch

    # built on the meta device: no random initialisation for the loaded weights to overwrite (0.12 s of v3's load)
    with torch.device("meta"):
        model = model_class(cls)(config)
    model.load_state_dict_strict(state, source=str(path), assign=True)
    return model


def load_dir(folder: Path, cls: type[DcaseNetModule] | None = None) -> DcaseNetModule:
    from dcasenet_hub.config import ModelConfig

    cfg, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotFoundError(
            f"{folder} has no {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME} "
            "(write one with model.save_pretrained(folder) or `dcasenet-hub convert`)"
        )
    return load_safetensors(weights, ModelConfig.load(cfg) if cfg.is_file() else None, cls)


def load_local(path: Path, cls: type[DcaseNetModule] | None = None) -> DcaseNetModule:
    if path.is_dir():
        return load_dir(path, cls)
    if path.suffix == ".safetensors":
        return load_safetensors(path, None, cls)
    return convert_checkpoint(path, arch=None, cls=cls)


