"""Pretrained DcaseNet weights: manifest ids, verified download, one-time conversion, cache, offline use, publishing.

``from_pretrained("dcasenet-v3")`` downloads the authors' checkpoint once, checks its git blob SHA-1, converts it to
``config.json`` + ``model.safetensors`` (+ a ``README.md`` model card) in the Hugging Face cache folder, and loads it
from there ever after, online or offline. docs/weights.md describes ids, sources, the cache layout, offline and
mirror use.

Example:
    >>> import dcasenet_hub
    >>> "dcasenet-v3" in dcasenet_hub.list_models()
    True
    >>> model = dcasenet_hub.from_pretrained("dcasenet-v3")   # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub.config import CONFIG_NAME, WEIGHTS_NAME
from dcasenet_hub.errors import (
    HubAccessError,
    ModelFileError,
    ModelNotFoundError,
    OfflineError,
    UnknownModelError,
    WeightsNotPublishedError,
)
from dcasenet_hub.hub import fetch as _download
from dcasenet_hub.hub.fetch import ChecksumMismatchError, NetworkUnavailableError
from dcasenet_hub.hub.manifest import ManifestError, load_manifest

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dcasenet_hub.config import ModelConfig
    from dcasenet_hub.models.dcasenet import DcaseNetModule

logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumMismatchError", "HubAccessError", "ManifestError", "ModelFileError", "ModelInfo", "ModelNotFoundError",
    "OfflineError", "UnknownModelError", "WeightsNotPublishedError", "CacheCheck", "cache_dir_location",
    "check_hub_access", "convert_checkpoint", "download", "from_pretrained", "list_models", "model_info", "push_to_hub",
    "save_pretrained", "verify_cache",
]

CARD_NAME = "README.md"
#: Owner part of the cache folder of converted official checkpoints: ``models--dcasenet-hub--<id>``.
CACHE_OWNER = "dcasenet-hub"
_SNAPSHOT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_CONFIG_META_KEY = "dcasenet_hub_config"


# ----------------------------------------------------------------------------------------------------------------
# Manifest access
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One manifest entry, resolved (aliases point at their target's data).

    Attributes:
        id: The id asked for.
        target: The id the weights are stored under (differs from ``id`` for an alias such as ``dcasenet-v3``).
        arch: ``"v1"``, ``"v2"`` or ``"v3"``.
        description: One line on what the weights are.
        trained_tasks: Heads that were trained.
        sources: Where the weights come from (manifest ``sources``); empty when never published.
        license: License of the weights (``None`` when there are none).
        citation: BibTeX of the paper.
        metrics: The paper's reported metrics (``reported_in``, ``values``, ``note``) or ``None``.
        unavailable: Why there are no weights and how to get some (entries without sources).
        cached: Folder with the converted weights when they are in the cache, else ``None``.
    """

    id: str
    target: str
    arch: str
    description: str
    trained_tasks: tuple[str, ...]
    sources: tuple[dict[str, Any], ...]
    license: str | None
    citation: str
    metrics: dict[str, Any] | None
    unavailable: str | None = None
    trained_on: tuple[dict[str, Any], ...] = ()
    cached: Path | None = field(default=None, compare=False)

    @property
    def published(self) -> bool:
        return bool(self.sources)

    @property
    def num_parameters(self) -> int:
        """Parameter count of the architecture (13,882,920 for v3)."""
        return _param_count(self.arch)


@functools.cache
def _param_count(arch: str) -> int:
    import torch

    from dcasenet_hub.models.dcasenet import build_network

    with torch.device("meta"):
        return build_network(arch).num_parameters()


def list_models(*, pretrained: bool = False) -> list[str]:
    """Model ids of the weights manifest (packaged, plus ``DCASENET_HUB_MANIFEST`` if set).

    Args:
        pretrained: Only ids with published weights (drops ``dcasenet-v1`` and ``dcasenet-v2``).

    Example:
        >>> list_models(pretrained=True)[:2]
        ['dcasenet-v3', 'dcasenet-v3-finetune-asc']
    """
    models = load_manifest()
    ids = sorted(models)
    if pretrained:
        ids = [m for m in ids if models[models[m].get("alias_of", m)]["sources"]]
    return ids


def _unknown(name: str, known: Sequence[str]) -> UnknownModelError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownModelError(
        f"Unknown model {name!r}.{hint} Known: {', '.join(sorted(known))}. See dcasenet_hub.list_models(); "
        "a local path (directory with config.json + model.safetensors, a .safetensors or an authors' .pt file) "
        "or a Hugging Face repo id 'org/name' also work."
    )


def model_info(model_id: str, *, cache_dir: str | Path | None = None) -> ModelInfo:
    """The manifest entry of ``model_id``, with where it is cached (if it is).

    Raises:
        UnknownModelError: ``model_id`` is not in the manifest.

    Example:
        >>> model_info("dcasenet-v3").target
        'dcasenet-v3-joint-asc'
    """
    models = load_manifest()
    if model_id not in models:
        raise _unknown(model_id, list(models))
    target = models[model_id].get("alias_of", model_id)
    e = models[target]
    cache = cache_dir_location(cache_dir)
    cached = None
    for src in e["sources"]:
        snap = _cached_snapshot(src, target, cache)
        if snap is not None:
            cached = snap
            break
    return ModelInfo(
        id=model_id, target=target, arch=e["arch"], description=models[model_id]["description"],
        trained_tasks=tuple(e["trained_tasks"]), sources=tuple(e["sources"]), license=e["license"],
        citation=e["citation"], metrics=e["metrics"], unavailable=e.get("unavailable"),
        trained_on=tuple(e["trained_on"]), cached=cached,
    )


# ----------------------------------------------------------------------------------------------------------------
# Cache layout (Hugging Face conventions)
# ----------------------------------------------------------------------------------------------------------------


def cache_dir_location(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (the huggingface_hub default).

    The environment is read at call time.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _repo_folder(cache: Path, model_id: str) -> Path:
    return cache / f"models--{CACHE_OWNER}--{model_id}"


def _hf_repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _complete(snapshot: Path, names: Sequence[str] = _SNAPSHOT_FILES) -> bool:
    return all((snapshot / n).is_file() for n in names)


#: Suffix of the sidecar beside a verified weights blob: JSON with its size, mtime_ns and sha256 when last hashed.
VERIFIED_SUFFIX = ".verified"
_SHA256_NAME_RE = re.compile(r"^[0-9a-f]{64}$")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_verified(blob: Path, sha256: str) -> None:
    """Record that ``blob`` (as it is now: size, mtime_ns) has content hash ``sha256``."""
    from dcasenet_hub._io import atomic_write_text

    try:
        atomic_write_text(blob.with_name(blob.name + VERIFIED_SUFFIX),
                          json.dumps({**_stamp(blob), "sha256": sha256}) + "\n")
    except OSError as exc:  # a read-only cache still loads; it is just hashed in full each time
        logger.info("cannot write the verification record of %s (%s)", blob, exc)


def _damaged_weights(snap: Path) -> str | None:
    """Check the cached ``model.safetensors`` of snapshot ``snap``; ``None`` when it is intact, else what is wrong.

    The blob is named by its sha256. The sidecar ``<blob>.verified`` holds size, mtime_ns and sha256 from the last
    full hash: when size and mtime_ns still match it, the file is taken as unchanged (no re-hash); otherwise (or
    without a sidecar) the file is hashed in full and compared with its name, and the sidecar is rewritten.
    """
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
    if isinstance(record, dict) and record.get("sha256") == expected and {
            k: record.get(k) for k in ("size", "mtime_ns")} == _stamp(blob):
        return None
    got = _download.sha256_file(blob)
    if got != expected:
        return (f"cached {weights} is damaged (expected sha256 {expected}, got {got}, "
                f"{blob.stat().st_size} bytes)")
    _write_verified(blob, got)
    return None


def _discard_snapshot(snap: Path, cache: Path) -> None:
    """Remove snapshot ``snap``, its weights blob and that blob's sidecar (after they were found damaged)."""
    blob = (snap / WEIGHTS_NAME).resolve()
    repo = snap.parent.parent
    if blob.parent == (repo / "blobs").resolve():
        blob.unlink(missing_ok=True)
        blob.with_name(blob.name + VERIFIED_SUFFIX).unlink(missing_ok=True)
    shutil.rmtree(snap, ignore_errors=True)
    (repo / "refs" / "main").unlink(missing_ok=True)
    _prune(repo, cache)


def _cached_snapshot(source: dict[str, Any], model_id: str, cache: Path) -> Path | None:
    if source["type"] == "huggingface":
        snap = _hf_repo_folder(cache, source["repo_id"]) / "snapshots" / source["revision"]
        return snap if _complete(snap, (CONFIG_NAME, WEIGHTS_NAME)) else None
    snap = _repo_folder(cache, model_id) / "snapshots" / source["git_blob_sha1"]
    return snap if _complete(snap) else None


def _prune(folder: Path, stop: Path) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``stop``."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _offline_error(model_id: str, reason: str, cache: Path, folder: Path) -> OfflineError:
    unset = ("\nUnset HF_HUB_OFFLINE / local_files_only to allow downloads."
             if reason.startswith(("offline mode", "local_files_only")) else "")
    return OfflineError(
        f"Cannot get '{model_id}': {reason}, and it is not in the cache ({folder} does not hold it). Fixes:\n"
        f"  1. On a machine with internet run `dcasenet-hub download {model_id}`, then copy the cache folder "
        f"{folder.name} from there into {cache} on this machine (or point HF_HUB_CACHE / cache_dir= at a "
        "copied cache).\n"
        "  2. Serve the official files from a local mirror: DCASENET_HUB_MIRROR=http://host:port (same paths), "
        "and add or override entries with DCASENET_HUB_MANIFEST=/path/to/manifest.json.\n"
        "  3. Use a local copy: on the command line `--model PATH` (a folder with config.json + model.safetensors, "
        "or the authors' best_ASC.pt); in Python from_pretrained('/path/to/dir_with_config_and_safetensors') or "
        "from_pretrained('/path/to/best_ASC.pt')." + unset
    )


def _offline_reason(local_files_only: bool) -> str | None:
    if local_files_only:
        return "local_files_only=True forbids downloads"
    if _download.offline_mode():
        return f"offline mode (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')})"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Serialisation: config.json + model.safetensors + README.md
# ----------------------------------------------------------------------------------------------------------------


def _serialize(model: DcaseNetModule, *, repo_id: str | None = None) -> dict[str, bytes]:
    """The three files of a saved model, as bytes."""
    from safetensors.torch import save

    from dcasenet_hub.hub.card import render_model_card

    config_json = json.dumps(model.config.to_dict(), indent=2) + "\n"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes metadata in hash-map order, so two keys made the bytes (and the
    # sha256 of a conversion) differ from run to run
    weights = save(tensors, metadata={_CONFIG_META_KEY: config_json})
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
        >>> from dcasenet_hub import build_model
        >>> import tempfile
        >>> d = save_pretrained(build_model("v3"), tempfile.mkdtemp())
        >>> sorted(p.name for p in d.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
    from dcasenet_hub._io import atomic_write_bytes

    out = Path(save_directory).expanduser()
    for name, data in _serialize(model, repo_id=repo_id).items():
        atomic_write_bytes(out / name, data)
    return out


def check_hub_access(*, token: str | None = None) -> str:
    """Check, before anything is uploaded, that there is a Hugging Face token, the Hub answers and accepts it.

    The token is ``token``, else ``HF_TOKEN``, else the saved login (``huggingface_hub.get_token``). The Hub is
    ``$HF_ENDPOINT`` (read now) or https://huggingface.co; reaching it is bounded by a short connect timeout.

    Returns:
        The user name the token belongs to.

    Raises:
        HubAccessError: no token, the Hub cannot be reached, or the token is rejected; the message names the fix.

    Example:
        >>> check_hub_access()   # doctest: +SKIP
        'my-user'
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise HubAccessError("No Hugging Face token: run `huggingface-cli login` (or `hf auth login`), or set "
                             "HF_TOKEN=hf_... (or pass --token / token=) with a token that may write to the repo")
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"
    try:
        _download.probe(endpoint)
    except NetworkUnavailableError as exc:
        raise HubAccessError(f"Cannot reach the Hugging Face Hub at {endpoint} ({exc}); check the network, "
                             "HTTPS_PROXY or HF_ENDPOINT, then run the command again") from None
    try:
        who = HfApi(endpoint=endpoint, token=token).whoami()
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubAccessError(f"The Hugging Face Hub at {endpoint} rejected the token (HTTP {status}): run "
                                 "`huggingface-cli login` again or set HF_TOKEN to a valid token") from None
        raise HubAccessError(f"The Hugging Face Hub at {endpoint} did not answer the token check "
                             f"({str(exc).splitlines()[0]}); try again later") from None
    except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
        raise HubAccessError(f"Cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}); check the "
                             "network, HTTPS_PROXY or HF_ENDPOINT, then run the command again") from None
    return str(who.get("name", "")) if isinstance(who, dict) else ""


def push_to_hub(
    model: DcaseNetModule,
    repo_id: str,
    *,
    commit_message: str = "Upload DcaseNet with dcasenet-hub",
    private: bool | None = None,
    token: str | None = None,
    branch: str | None = None,
    create_pr: bool = False,
) -> str:
    """Save ``model`` (see :func:`save_pretrained`) and upload it to the Hugging Face Hub repo ``repo_id``.

    Creates the repo if needed. Uses huggingface_hub's ``HfApi.create_repo`` and ``HfApi.upload_folder``.

    Returns:
        The URL of the commit (or pull request).

    Example:
        >>> push_to_hub(model, "my-org/dcasenet-v3-finetuned")   # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    if not _HF_REPO_RE.match(repo_id):
        raise ValueError(f"repo_id {repo_id!r} must look like 'org/name'")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dcasenet-hub-push-") as tmp:
        save_pretrained(model, tmp, repo_id=repo_id)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=tmp, repo_type="model", commit_message=commit_message,
            revision=branch, create_pr=create_pr,
        )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


# ----------------------------------------------------------------------------------------------------------------
# Loading from local files
# ----------------------------------------------------------------------------------------------------------------


def _infer_arch(keys: set[str], shapes: dict[str, tuple[int, ...]]) -> str:
    if "conv_block4_1.conv1.weight" in keys:
        return "v3"
    w = shapes.get("asc_block.conv1.weight")
    if w is not None:
        return "v1" if len(w) == 3 else "v2"
    raise ValueError(
        "Cannot tell the DcaseNet architecture from the checkpoint's keys (no conv_block4_1 / asc_block): "
        "is it a DcaseNet state_dict? Pass it to convert_checkpoint(..., arch=...) to name the architecture."
    )


def _read_authors_checkpoint(path: Path) -> dict[str, torch.Tensor]:
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


def _official_config(model_id: str, entry: dict[str, Any], source: dict[str, Any]) -> ModelConfig:
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

    Returns:
        The loaded model in eval mode.

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped keys (all listed).

    Example:
        >>> convert_checkpoint("best_ASC.pt", "dcasenet-v3-local/", arch="v3")   # doctest: +SKIP
    """
    from dcasenet_hub.config import ModelConfig
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"No checkpoint file {path}")
    state = _read_authors_checkpoint(path)
    sha1 = _download.git_blob_sha1_file(path)
    match = _manifest_match(sha1)
    if match is not None:
        mid, entry, source = match
        config = _official_config(model_id or mid, entry, source)
        if arch is not None and arch.removeprefix("dcasenet-") != config.arch:
            raise ValueError(f"{path} is the official {mid} checkpoint, a DcaseNet-{config.arch}, not {arch}")
    else:
        a = (arch.lower().removeprefix("dcasenet-") if arch else
             _infer_arch(set(state), {k: tuple(v.shape) for k, v in state.items()}))
        config = ModelConfig(
            arch=a,
            trained_tasks=tuple(trained_tasks or ()),
            model_id=model_id or (Path(output_dir).expanduser().resolve().name if output_dir is not None
                                  else str(path)),
            provenance=(f"authors'-format checkpoint {path.name} (git blob sha1 {sha1}; not a file of the weights "
                        "manifest, so its training is unknown), converted to safetensors by dcasenet-hub"),
        )
    if output_dir is None:  # nothing is written: say so instead of "converted"
        import dataclasses

        config = dataclasses.replace(config, provenance=config.provenance.replace(
            "converted to safetensors by dcasenet-hub", "read by dcasenet-hub (not converted)"))
    model = _model_class(cls)(config)
    model.load_state_dict_strict(state, source=str(path))
    model.eval()
    if output_dir is not None:
        save_pretrained(model, output_dir)
    return model


def _model_class(cls: type[DcaseNetModule] | None) -> type[DcaseNetModule]:
    """The class to build: the caller's (``DcaseNet.from_pretrained`` passes its own), else the bare network."""
    if cls is not None:
        return cls
    from dcasenet_hub.models.dcasenet import DcaseNetModule

    return DcaseNetModule


def _load_safetensors(path: Path, config: ModelConfig | None, cls: type[DcaseNetModule] | None = None
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
    if config is None and meta.get(_CONFIG_META_KEY):
        config = ModelConfig.from_dict(json.loads(meta[_CONFIG_META_KEY]))
    if config is None:
        arch = _infer_arch(set(state), {k: tuple(v.shape) for k, v in state.items()})
        config = ModelConfig(arch=arch, model_id=str(path),
                             provenance=f"{path} (no config: architecture inferred from its keys)")
    model = _model_class(cls)(config)
    model.load_state_dict_strict(state, source=str(path))
    return model


def _load_dir(folder: Path, cls: type[DcaseNetModule] | None = None) -> DcaseNetModule:
    from dcasenet_hub.config import ModelConfig

    cfg, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotFoundError(
            f"{folder} has no {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME} "
            "(write one with model.save_pretrained(folder) or `dcasenet-hub convert`)"
        )
    return _load_safetensors(weights, ModelConfig.load(cfg) if cfg.is_file() else None, cls)


def _load_local(path: Path, cls: type[DcaseNetModule] | None = None) -> DcaseNetModule:
    if path.is_dir():
        return _load_dir(path, cls)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, None, cls)
    return convert_checkpoint(path, arch=None, cls=cls)


# ----------------------------------------------------------------------------------------------------------------
# Fetching: official files (download + verify + convert) and Hugging Face repos
# ----------------------------------------------------------------------------------------------------------------


def _write_snapshot(repo: Path, revision: str, files: dict[str, bytes]) -> Path:
    """Store ``files`` as content-addressed blobs and link them from ``snapshots/<revision>/``; write refs/main.

    Blob names follow huggingface_hub: sha256 for the weights (as for LFS files), git blob SHA-1 for text files.
    The snapshot folder is assembled aside and renamed into place, so it is either complete or absent.
    """
    import hashlib

    from dcasenet_hub._io import atomic_write_bytes, atomic_write_text

    blobs = repo / "blobs"
    snap = repo / "snapshots" / revision
    _mkdir(repo / "snapshots")
    tmp_snap = Path(tempfile.mkdtemp(prefix=f".snapshot-{revision}.", dir=repo))  # beside, not inside, snapshots/
    try:
        for name, data in files.items():
            blob_name = (hashlib.sha256(data).hexdigest() if name == WEIGHTS_NAME
                         else _download.git_blob_sha1_bytes(data))
            blob = blobs / blob_name
            if not blob.is_file() or name == WEIGHTS_NAME:  # (re)write the weights: a blob there may be damaged
                atomic_write_bytes(blob, data)
            if name == WEIGHTS_NAME:
                _write_verified(blob, blob_name)
            try:
                os.symlink(os.path.join("..", "..", "blobs", blob_name), tmp_snap / name)
            except OSError:  # no symlinks (e.g. Windows without developer mode): copy, as huggingface_hub does
                shutil.copyfile(blob, tmp_snap / name)
        if snap.exists():
            shutil.rmtree(snap)
        os.replace(tmp_snap, snap)
    except BaseException:
        shutil.rmtree(tmp_snap, ignore_errors=True)
        raise
    atomic_write_text(repo / "refs" / "main", revision)
    return snap


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


#: Without a manifest ``size``, an official checkpoint may be at most this many times its float32 parameter bytes
#: (plus ``_SIZE_SLACK``): a state_dict holds the parameters, a few buffers and names.
_SIZE_FACTOR = 2
_SIZE_SLACK = 16 << 20


def _max_download_bytes(entry: dict[str, Any], source: dict[str, Any]) -> int:
    """Most bytes the download of ``source`` may have: the manifest ``size``, else a bound from the architecture."""
    if isinstance(source.get("size"), int):
        return source["size"]
    return _SIZE_FACTOR * 4 * _param_count(entry["arch"]) + _SIZE_SLACK


def _fetch_official(model_id: str, entry: dict[str, Any], source: dict[str, Any], *, cache: Path,
                    local_files_only: bool, progress: bool, label: str | None = None) -> Path:
    from filelock import FileLock, Timeout

    label = label or model_id
    sha1 = source["git_blob_sha1"]
    repo = _repo_folder(cache, model_id)
    snap = repo / "snapshots" / sha1
    if _complete(snap):
        return snap
    reason = _offline_reason(local_files_only)
    if reason:
        raise _offline_error(label, reason, cache, repo)
    url = _download.apply_mirror(source["url"])
    lock = FileLock(str(_mkdir(cache / ".locks" / repo.name) / f"{sha1}.lock"))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        logger.info("Another process is downloading %s; waiting for it", model_id)
        lock.acquire()
    try:
        if _complete(snap):  # the other process finished it
            return snap
        try:
            _download.probe(url)
        except NetworkUnavailableError as exc:
            raise _offline_error(label, f"no network ({exc})", cache, repo) from exc
        partial = repo / "blobs" / f"{sha1}.incomplete"
        logger.info("Downloading %s from %s", model_id, url)
        try:
            _download.download(url, partial, expected_git_sha1=sha1, max_bytes=_max_download_bytes(entry, source),
                               desc=model_id, progress=progress)
        except ChecksumMismatchError:
            _prune(repo, cache)
            raise
        except NetworkUnavailableError as exc:
            raise _offline_error(label, f"download failed ({exc}); the partial file is kept and resumed "
                                 "next time", cache, repo) from exc
        try:
            model = _model_class(None)(_official_config(model_id, entry, source))
            model.load_state_dict_strict(_read_authors_checkpoint(partial), source=f"{url} ({model_id})")
            snap = _write_snapshot(repo, sha1, _serialize(model))
        except BaseException:
            partial.unlink(missing_ok=True)
            _prune(repo, cache)
            raise
        partial.unlink(missing_ok=True)
        logger.info("Cached %s in %s", model_id, snap)
        return snap
    finally:
        lock.release()


def _fetch_hf(repo_id: str, *, revision: str | None, cache: Path, local_files_only: bool,
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
    folder = _hf_repo_folder(cache, repo_id)
    reason = _offline_reason(local_files_only)
    offline = reason is not None
    if not offline and revision and _COMMIT_RE.match(revision):
        # a pinned commit never changes: use the cache without asking the server
        snap = folder / "snapshots" / revision
        if _complete(snap, (CONFIG_NAME, WEIGHTS_NAME)):
            offline = True
    if not offline:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        try:
            _download.probe(endpoint)
        except NetworkUnavailableError as exc:  # bounded wait; huggingface_hub's own retries take ~23 s
            reason = f"no network ({exc})"
            offline = True
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(Path(hf_hub_download(
                repo_id, name, revision=revision, cache_dir=cache, local_files_only=offline,
                library_name="dcasenet-hub", library_version=__version__,
            )))
        except LocalEntryNotFoundError as exc:
            raise _offline_error(label, reason or "the file could not be downloaded", cache, folder) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise ValueError(f"Hugging Face repo {repo_id!r} (revision {revision or 'main'}) not found or not "
                             f"accessible: {exc}") from exc
        except EntryNotFoundError as exc:
            raise ValueError(f"Hugging Face repo {repo_id!r} has no {name}: it is not a dcasenet-hub model "
                             "(those hold config.json + model.safetensors)") from exc
    if expected_sha256 is not None:
        _check_sha256(paths[1], expected_sha256, f"{repo_id}@{revision}")
    return paths[0].parent


def _check_sha256(path: Path, expected: str, origin: str) -> None:
    got = _download.sha256_file(path)
    if got != expected:
        raise ChecksumMismatchError(
            f"{path} (from {origin}) has the wrong hash: expected sha256 {expected}, got {got}. Delete that "
            "model's folder from the cache and download again; if it persists, the manifest entry is wrong."
        )


def download(
    model_id: str,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    progress: bool = True,
) -> Path:
    """Make sure the weights of manifest id ``model_id`` are in the cache; return their folder.

    Sources are tried in manifest order: the cache first, then the network. Official (GitHub) files are downloaded
    with resume and a progress bar, checked against their git blob SHA-1 and converted once; Hugging Face sources
    go through huggingface_hub at the pinned revision with a sha256 check. Two processes asking at once download
    once (a file lock in ``<cache>/.locks``).

    Returns:
        A folder with ``config.json`` and ``model.safetensors`` (and a ``README.md`` card).

    Raises:
        UnknownModelError: not a manifest id.
        WeightsNotPublishedError: the manifest has no weights for it (v1, v2).
        OfflineError: not cached, and offline or no network (within ~10 s); the message names the fixes.
        ChecksumMismatchError: the downloaded file is not the published one (nothing is cached), or the cached
            weights were damaged and cannot be fetched again now (they are removed; the message names the fix).

    A cached ``model.safetensors`` is checked on every call: its size and mtime_ns against the record written
    when it was last hashed (``blobs/<sha256>.verified``), and hashed in full again when they differ. Damaged
    weights are removed and fetched again.

    Example:
        >>> download("dcasenet-v3")   # doctest: +SKIP
        PosixPath('/root/.cache/huggingface/hub/models--dcasenet-hub--dcasenet-v3-joint-asc/snapshots/ae2c81...')
    """
    models = load_manifest()
    if model_id not in models:
        raise _unknown(model_id, list(models))
    target = models[model_id].get("alias_of", model_id)
    entry = models[target]
    if not entry["sources"]:
        raise WeightsNotPublishedError(f"No weights for '{model_id}'. {entry.get('unavailable', '')}".strip())
    cache = cache_dir_location(cache_dir)
    damaged: str | None = None
    for src in entry["sources"]:
        snap = _cached_snapshot(src, target, cache)
        if snap is not None:
            if src["type"] == "huggingface":  # files another tool put in the HF cache: check them each time
                _check_sha256(snap / WEIGHTS_NAME, src["sha256"], f"{src['repo_id']}@{src['revision']}")
                return snap
            damaged = _damaged_weights(snap)
            if damaged is None:
                return snap
            logger.warning("%s; removing it and fetching it again", damaged)
            _discard_snapshot(snap, cache)
    errors: list[Exception] = []
    for src in entry["sources"]:
        try:
            if src["type"] == "huggingface":
                return _fetch_hf(src["repo_id"], revision=src["revision"], cache=cache,
                                 local_files_only=local_files_only, expected_sha256=src["sha256"],
                                 label=model_id)
            return _fetch_official(target, entry, src, cache=cache, local_files_only=local_files_only,
                                   progress=progress, label=model_id)
        except OfflineError as exc:  # try the next source; checksum errors are not retried elsewhere
            errors.append(exc)
    if damaged is not None:
        raise ChecksumMismatchError(
            f"{damaged}; it was removed from the cache and could not be fetched again "
            f"({str(errors[-1]).splitlines()[0]}). Fix: run `dcasenet-hub download {model_id}` with network "
            "access (or copy that model's cache folder from a machine that has it)."
        )
    raise errors[-1]


# ----------------------------------------------------------------------------------------------------------------
# from_pretrained
# ----------------------------------------------------------------------------------------------------------------


def from_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
    cls: type[DcaseNetModule] | None = None,
) -> DcaseNetModule:
    """Load a DcaseNet, strictly, in eval mode, as an instance of ``cls`` (built as ``cls(config)``).

    ``name_or_path`` may be:

    * a manifest id (``dcasenet_hub.list_models()``), e.g. ``"dcasenet-v3"``: downloaded, verified and converted
      once, then loaded from the cache;
    * a local folder with ``config.json`` + ``model.safetensors`` (from ``save_pretrained``);
    * a local ``.safetensors`` file, or an authors'-format ``.pt`` file (read with ``weights_only=True``);
    * a Hugging Face repo id ``"org/name"`` (``revision`` = branch, tag or commit).

    Args:
        name_or_path: What to load.
        revision: Revision of a Hugging Face repo id (manifest ids are pinned and take none).
        cache_dir: Cache folder (default ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``).
        device: Where to put the model (default CPU).
        dtype: Floating dtype of the parameters, e.g. ``torch.float16`` or ``"float16"``.
        local_files_only: Never use the network (also the case when ``HF_HUB_OFFLINE=1`` at call time).
        cls: The class to build (``DcaseNet.from_pretrained`` passes its own; default the bare network).

    Raises:
        UnknownModelError: the name is nothing of the above (the message lists the known ids).
        WeightsNotPublishedError: ``dcasenet-v1`` / ``dcasenet-v2``: never published; the message says how to get them.
        OfflineError: not cached and no network or offline mode; the message names the fixes.
        ChecksumMismatchError: a download is not the published file.
        CheckpointMismatchError: a checkpoint with missing or extra keys (listed).

    Example:
        >>> model = from_pretrained("dcasenet-v3")          # doctest: +SKIP
        >>> model.config.trained_tasks                       # doctest: +SKIP
        ('scene', 'tags', 'events')
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    models = load_manifest()
    if path.exists():
        model = _load_local(path, cls)
        if path.is_dir() or path.suffix == ".safetensors":
            model.config = model.config.replace(model_id=model.config.model_id or str(path))
    elif name in models:
        if revision is not None:
            raise ValueError(f"'{name}' is a manifest id with pinned sources; revision= applies to Hugging Face "
                             "repo ids only")
        model = _load_dir(download(name, cache_dir=cache_dir, local_files_only=local_files_only), cls)
    elif _HF_REPO_RE.match(name) and not name.endswith((".pt", ".pth", ".safetensors")):
        folder = _fetch_hf(name, revision=revision, cache=cache_dir_location(cache_dir),
                           local_files_only=local_files_only)
        model = _load_dir(folder, cls)
        model.config = model.config.replace(model_id=name if revision is None else f"{name}@{revision}")
    elif os.sep in name or "/" in name or path.suffix in (".pt", ".pth", ".safetensors", ".bin"):
        raise ModelNotFoundError(f"No such file or folder: {path}")
    else:
        raise _unknown(name, list(models))
    return _place(model, device=device, dtype=dtype)


def _place(model: DcaseNetModule, *, device: Any, dtype: Any) -> DcaseNetModule:
    import torch

    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'float16', 'bfloat16'")
        dtype = resolved
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Cache verification
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
    """Re-hash every cached file of dcasenet-hub models and of the manifest's Hugging Face sources.

    Blobs are named by their hash (sha256 for weights, git blob SHA-1 for text files, as huggingface_hub does);
    each is re-hashed and compared with its name, and every snapshot link must lead to an existing blob.

    Returns:
        One :class:`CacheCheck` per file (empty when nothing is cached).

    Example:
        >>> [c for c in verify_cache() if not c.ok]   # doctest: +SKIP
        []
    """
    cache = cache_dir_location(cache_dir)
    repos = sorted(cache.glob(f"models--{CACHE_OWNER}--*"))
    expected_hf: dict[Path, str] = {}
    try:
        for e in load_manifest().values():
            for s in e.get("sources", []):
                if s["type"] == "huggingface":
                    folder = _hf_repo_folder(cache, s["repo_id"])
                    repos.append(folder)
                    expected_hf[folder / "snapshots" / s["revision"] / WEIGHTS_NAME] = s["sha256"]
    except ManifestError as exc:
        logger.warning("%s", exc)
    results: list[CacheCheck] = []
    for repo in dict.fromkeys(repos):
        if not repo.is_dir():
            continue
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
        for f in sorted((repo / "snapshots").glob("*/*")):
            if f.is_symlink() and not f.exists():
                results.append(CacheCheck(f, False, "existing blob", "broken link"))
            elif f in expected_hf:
                got = _download.sha256_file(f)
                results.append(CacheCheck(f, got == expected_hf[f], expected_hf[f], got))
            elif not f.is_symlink() and f.is_file():  # a copied (not linked) snapshot file: it must equal a blob
                got = (_download.sha256_file(f) if f.name == WEIGHTS_NAME else _download.git_blob_sha1_file(f))
                results.append(CacheCheck(f, (repo / "blobs" / got).is_file(), "a blob of the same content", got))
    return results
