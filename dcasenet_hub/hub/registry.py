"""Model ids of the weights manifest: listing, resolving aliases, and what is known about each.

Example:
    >>> "dcasenet-v3" in list_models()
    True
    >>> model_info("dcasenet-v3").target
    'dcasenet-v3-joint-asc'
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub.errors import UnknownModelError
from dcasenet_hub.hub.cache import (
    cache_dir_location,
    cached_snapshot,
    hf_cache_location,
)
from dcasenet_hub.hub.legacy import legacy_snapshot
from dcasenet_hub.hub.manifest import load_manifest


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
        cached: Folder with the converted weights when they are in a cache, else ``None`` (an older release's
            entry in the Hugging Face cache counts: it is migrated on first use).
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
        return param_count(self.arch)


#: Parameters of each architecture with the paper's heads, so that listing models needs no torch import;
#: ``tests/test_hub.py`` checks them against the built networks.
PARAMETERS = {"v1": 9_139_112, "v2": 9_320_936, "v3": 13_882_920}


@functools.cache
def param_count(arch: str) -> int:
    """Parameters of architecture ``arch`` (:data:`PARAMETERS`, else counted on the meta device, importing torch)."""
    if arch in PARAMETERS:
        return PARAMETERS[arch]
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


def unknown(name: str, known: Sequence[str]) -> UnknownModelError:
    """The error for an unknown name, with the closest known id and what else ``from_pretrained`` accepts."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownModelError(
        f"Unknown model {name!r}.{hint} Known: {', '.join(sorted(known))}. See dcasenet_hub.list_models(); "
        "a local path (directory with config.json + model.safetensors, a .safetensors or an authors' .pt file) "
        "or a Hugging Face repo id 'org/name' also work."
    )


def resolve(model_id: str) -> tuple[str, dict[str, Any]]:
    """``(target id, entry)`` of manifest id ``model_id`` (an alias resolves to its target).

    Raises:
        UnknownModelError: not a manifest id.
    """
    models = load_manifest()
    if model_id not in models:
        raise unknown(model_id, list(models))
    target = models[model_id].get("alias_of", model_id)
    return target, models[target]


def model_info(model_id: str, *, cache_dir: str | Path | None = None) -> ModelInfo:
    """The manifest entry of ``model_id``, with where it is cached (if it is). Nothing is hashed or moved.

    Raises:
        UnknownModelError: ``model_id`` is not in the manifest.

    Example:
        >>> model_info("dcasenet-v3").target
        'dcasenet-v3-joint-asc'
    """
    target, e = resolve(model_id)
    cache, hf_cache = cache_dir_location(cache_dir), hf_cache_location(cache_dir)
    cached = None
    for src in e["sources"]:
        snap = cached_snapshot(src, target, cache, hf_cache)
        if snap is None and src["type"] != "huggingface":
            snap = legacy_snapshot(target, src["git_blob_sha1"], hf_cache=hf_cache)
        if snap is not None:
            cached = snap
            break
    return ModelInfo(
        id=model_id, target=target, arch=e["arch"], description=load_manifest()[model_id]["description"],
        trained_tasks=tuple(e["trained_tasks"]), sources=tuple(e["sources"]), license=e["license"],
        citation=e["citation"], metrics=e["metrics"], unavailable=e.get("unavailable"),
        trained_on=tuple(e["trained_on"]), cached=cached,
    )
