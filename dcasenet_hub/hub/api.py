"""Pretrained DcaseNet weights: ``load_pretrained`` (behind ``from_pretrained``), ``download`` and ``push_to_hub``.

``dcasenet_hub.from_pretrained("dcasenet-v3")`` downloads the authors' checkpoint once, checks its git blob SHA-1,
converts it to ``config.json`` + ``model.safetensors`` (+ a ``README.md`` model card) in the package cache, and loads
it from there ever after, online or offline. Hugging Face repo ids go through huggingface_hub and its cache.
docs/weights.md describes ids, sources, the caches, offline and mirror use.

The other public names of the hub layer are defined in :mod:`~dcasenet_hub.hub.registry` (ids),
:mod:`~dcasenet_hub.hub.cache` (locations, verification), :mod:`~dcasenet_hub.hub.checkpoint` (file formats) and
re-exported here and in :mod:`dcasenet_hub.hub`.

Example:
    >>> import dcasenet_hub
    >>> "dcasenet-v3" in dcasenet_hub.list_models()
    True
    >>> model = dcasenet_hub.from_pretrained("dcasenet-v3")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub import _env
from dcasenet_hub._progress import show_progress
from dcasenet_hub.config import WEIGHTS_NAME
from dcasenet_hub.errors import (
    ChecksumMismatchError,
    HubAccessError,
    ManifestError,
    ModelFileError,
    ModelNotFoundError,
    NetworkUnavailableError,
    OfflineError,
    UnknownModelError,
    WeightsNotPublishedError,
)
from dcasenet_hub.hub import fetch as _download
from dcasenet_hub.hub.cache import (
    VERIFIED_SUFFIX,
    CacheCheck,
    cache_dir_location,
    cached_snapshot,
    check_writable,
    damaged_files,
    discard_snapshot,
    hf_cache_location,
    verify_cache,
)
from dcasenet_hub.hub.checkpoint import (
    convert_checkpoint,
    load_dir,
    load_local,
    save_pretrained,
)
from dcasenet_hub.hub.legacy import adopt_legacy
from dcasenet_hub.hub.manifest import HF_REPO_RE, load_manifest
from dcasenet_hub.hub.registry import (
    ModelInfo,
    list_models,
    model_info,
    resolve,
    unknown,
)
from dcasenet_hub.hub.sources import check_sha256, fetch_hf, fetch_official

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dcasenet_hub.models.dcasenet import DcaseNetModule

logger = logging.getLogger(__name__)

__all__ = [
    "VERIFIED_SUFFIX",
    "CacheCheck",
    "ChecksumMismatchError",
    "HubAccessError",
    "ManifestError",
    "ModelFileError",
    "ModelInfo",
    "ModelNotFoundError",
    "OfflineError",
    "UnknownModelError",
    "WeightsNotPublishedError",
    "cache_dir_location",
    "check_hub_access",
    "convert_checkpoint",
    "download",
    "hf_cache_location",
    "list_models",
    "load_pretrained",
    "model_info",
    "push_to_hub",
    "save_pretrained",
    "verify_cache",
]


def download(
    model_id: str,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    progress: bool | None = True,
) -> Path:
    """Make sure the weights of manifest id ``model_id`` are in a cache; return their folder.

    Sources are tried in manifest order: the caches first, then the network. Official (GitHub) files are
    downloaded into the package cache (``cache_dir``, ``$DCASENET_HUB_CACHE`` or ``~/.cache/dcasenet_hub``) with
    resume and a progress bar, checked against their git blob SHA-1 and converted once; an entry an older release
    left in the Hugging Face cache is verified and moved there once. Hugging Face sources go through huggingface_hub
    (its cache) at the pinned revision with a sha256 check. Two processes asking at once download once (a file
    lock in ``<cache>/.locks``).

    Args:
        model_id: A manifest id (:func:`list_models`).
        cache_dir: One folder for both caches (default: their locations, see docs/weights.md).
        local_files_only: Never use the network (also the case when ``HF_HUB_OFFLINE=1`` at call time).
        progress: Show a progress bar while downloading (``None``: when stderr is a terminal).

    Returns:
        A folder with ``config.json`` and ``model.safetensors`` (and a ``README.md`` card).

    Raises:
        UnknownModelError: not a manifest id.
        WeightsNotPublishedError: the manifest has no weights for it (v1, v2).
        OfflineError: not cached, and offline or no network (within ~10 s); the message names the fixes.
        ChecksumMismatchError: the downloaded file is not the published one (nothing is cached), or the cached
            weights were damaged and cannot be fetched again now (they are removed; the message names the fix).

    A cached ``model.safetensors`` is checked on every call: its stat stamp (size, mtime, inode, ctime) against the
    record written when it was last hashed (``blobs/<sha256>.verified``), and hashed in full again when they differ.
    Damaged weights are removed and fetched again.

    Example:
        >>> download("dcasenet-v3")   # doctest: +SKIP
        PosixPath('/root/.cache/dcasenet_hub/models/dcasenet-v3-joint-asc/snapshots/ae2c81...')
    """
    progress = show_progress(progress)
    target, entry = resolve(model_id)
    if not entry["sources"]:
        raise WeightsNotPublishedError(f"No weights for '{model_id}'. {entry.get('unavailable', '')}".strip())
    cache, hf_cache = cache_dir_location(cache_dir), hf_cache_location(cache_dir)
    damaged: str | None = None
    for src in entry["sources"]:
        snap = cached_snapshot(src, target, cache, hf_cache)
        if snap is not None and src["type"] == "huggingface":  # files another tool put in the HF cache: check
            check_sha256(snap / WEIGHTS_NAME, src["sha256"], f"{src['repo_id']}@{src['revision']}")
            return snap
        if snap is not None:
            damaged = damaged_files(snap)
            if damaged is None:
                return snap
            logger.warning("%s; removing it and fetching it again", damaged)
            discard_snapshot(snap, cache)
        if src["type"] != "huggingface":
            snap, legacy_damage = adopt_legacy(target, src["git_blob_sha1"], cache=cache, hf_cache=hf_cache)
            if snap is not None:
                return snap
            damaged = legacy_damage or damaged
    errors: list[Exception] = []
    for src in entry["sources"]:
        if src["type"] != "huggingface":  # fetch_hf checks the Hugging Face cache itself
            check_writable(cache)
        try:
            if src["type"] == "huggingface":
                return fetch_hf(src["repo_id"], revision=src["revision"], cache=hf_cache,
                                local_files_only=local_files_only, expected_sha256=src["sha256"], label=model_id)
            return fetch_official(target, entry, src, cache=cache, local_files_only=local_files_only,
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


def load_pretrained(
    cls: type[DcaseNetModule],
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
) -> DcaseNetModule:
    """Load a DcaseNet, strictly, in eval mode, as an instance of ``cls`` (built as ``cls(config)``).

    The machinery behind ``DcaseNet.from_pretrained`` / ``dcasenet_hub.from_pretrained``, which users call: this
    layer sits below the class users hold, so it takes the class to build instead of naming it.

    ``name_or_path`` may be:

    * a manifest id (``dcasenet_hub.list_models()``), e.g. ``"dcasenet-v3"``: downloaded, verified and converted
      once, then loaded from the cache;
    * a local folder with ``config.json`` + ``model.safetensors`` (from ``save_pretrained``);
    * a local ``.safetensors`` file, or an authors'-format ``.pt`` file (read with ``weights_only=True``);
    * a Hugging Face repo id ``"org/name"`` (``revision`` = branch, tag or commit).

    Args:
        cls: The class to build (``DcaseNet.from_pretrained`` passes its own).
        name_or_path: What to load.
        revision: Revision of a Hugging Face repo id (manifest ids are pinned and take none).
        cache_dir: Cache folder, for both caches (default: the package cache ``$DCASENET_HUB_CACHE`` or
            ``~/.cache/dcasenet_hub`` for manifest ids, huggingface_hub's cache for repo ids).
        device: Where to put the model (default CPU).
        dtype: Floating dtype of the parameters, e.g. ``torch.float16``, ``"fp16"`` or ``"float64"``.
        local_files_only: Never use the network (also the case when ``HF_HUB_OFFLINE=1`` at call time).

    Raises:
        UnknownModelError: the name is nothing of the above (the message lists the known ids).
        WeightsNotPublishedError: ``dcasenet-v1`` / ``dcasenet-v2``: never published; the message says how to get them.
        OfflineError: not cached and no network or offline mode; the message names the fixes.
        ChecksumMismatchError: a download is not the published file.
        CheckpointMismatchError: a checkpoint with missing or extra keys (listed).

    Example:
        >>> model = load_pretrained(DcaseNet, "dcasenet-v3")   # doctest: +SKIP
        >>> model.config.trained_tasks                       # doctest: +SKIP
        ('scene', 'tags', 'events')
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    models = load_manifest()
    if path.exists():
        model = load_local(path, cls)
        if path.is_dir() or path.suffix == ".safetensors":
            model.config = model.config.replace(model_id=model.config.model_id or str(path))
    elif name in models:
        if revision is not None:
            raise ValueError(f"'{name}' is a manifest id with pinned sources; revision= applies to Hugging Face "
                             "repo ids only")
        snap = download(name, cache_dir=cache_dir, local_files_only=local_files_only)
        blob = (snap / WEIGHTS_NAME).resolve().name  # a package-cache blob is named by the sha256 just verified
        model = load_dir(snap, cls, verified_sha256=blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None)
    elif HF_REPO_RE.match(name) and not name.endswith((".pt", ".pth", ".safetensors")):
        folder = fetch_hf(name, revision=revision, cache=hf_cache_location(cache_dir),
                          local_files_only=local_files_only)
        model = load_dir(folder, cls)
        model.config = model.config.replace(model_id=name if revision is None else f"{name}@{revision}")
    elif os.sep in name or "/" in name or path.suffix in (".pt", ".pth", ".safetensors", ".bin"):
        raise ModelNotFoundError(f"No such file or folder: {path}")
    else:
        raise unknown(name, list(models))
    return _place(model, device=device, dtype=dtype)


def _place(model: DcaseNetModule, *, device: Any, dtype: Any) -> DcaseNetModule:
    """``model`` in eval mode on ``device`` (``None``: where it is; ``"auto"``: CUDA if there is one) in ``dtype``.

    The parameters' storage dtype may be any floating dtype (``float64`` too, e.g. for numerical checks), unlike
    :func:`dcasenet_hub.devices.resolve_dtype`, which names the three compute dtypes; their spellings (``"fp16"``,
    ``"bf16"``, ``"half"``) are accepted here as well.
    """
    import torch

    from dcasenet_hub.devices import DTYPE_NAMES, resolve_device

    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        resolved = getattr(torch, DTYPE_NAMES.get(key, key), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'float16', 'bfloat16'")
        dtype = resolved
    if device is not None:
        device = resolve_device(device, model=model)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model.eval()


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
    endpoint = _env.hf_endpoint()
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

    Raises:
        HubAccessError: the Hub (``$HF_ENDPOINT``) cannot be reached, or it refused the repo or the upload; the
            one-line message names the fix. :func:`check_hub_access` checks token and network before any work.

    Example:
        >>> push_to_hub(model, "my-org/dcasenet-v3-finetuned")   # doctest: +SKIP
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not HF_REPO_RE.match(repo_id):
        raise ValueError(f"repo_id {repo_id!r} must look like 'org/name'")
    endpoint = _env.hf_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dcasenet-hub-push-") as tmp:
            save_pretrained(model, tmp, repo_id=repo_id)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, repo_type="model", commit_message=commit_message,
                revision=branch, create_pr=create_pr,
            )
    except HfHubHTTPError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HubAccessError(f"Upload to {repo_id} at {endpoint} failed ({first}); check that the token may write "
                             "to that repo (`huggingface-cli login` or HF_TOKEN=...), then try again") from None
    except _connection_errors() as exc:  # evaluated only when something was raised
        raise HubAccessError(f"Cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}); check the network, HTTPS_PROXY or HF_ENDPOINT, then "
                             "try again") from None
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of huggingface_hub's HTTP client, whichever it uses (httpx's share no base with OSError)."""
    import importlib

    found: list[type[BaseException]] = [OSError]
    for module, name in (("httpx", "TransportError"), ("httpx2", "TransportError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
