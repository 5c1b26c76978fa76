"""Weights: the manifest, verified downloads, the caches, checkpoint formats, model cards and the hub mixin.

This layer stores and fetches configs and state dicts; it builds models only as ``cls(config)`` for the class it is
given (:class:`~dcasenet_hub.hub.mixin.HubMixin`). Modules: :mod:`.registry` (manifest ids), :mod:`.cache` (the
package cache and the Hugging Face cache, verification), :mod:`.legacy` (moving an older release's cache entries),
:mod:`.checkpoint` (authors' ``.pt`` files, safetensors, ``save_pretrained``), :mod:`.sources` and :mod:`.fetch`
(downloads), :mod:`.api` (``load_pretrained``, ``download``, ``push_to_hub``). Users load models with
``dcasenet_hub.from_pretrained`` / ``DcaseNet.from_pretrained``, which give the class users hold. docs/weights.md
describes ids, sources and the cache layout.
"""

from dcasenet_hub.hub.api import (
    check_hub_access,
    download,
    push_to_hub,
)
from dcasenet_hub.hub.cache import (
    CacheCheck,
    cache_dir_location,
    hf_cache_location,
    verify_cache,
)
from dcasenet_hub.hub.checkpoint import convert_checkpoint, save_pretrained
from dcasenet_hub.hub.mixin import HubMixin
from dcasenet_hub.hub.registry import ModelInfo, list_models, model_info

__all__ = [
    "CacheCheck",
    "HubMixin",
    "ModelInfo",
    "cache_dir_location",
    "check_hub_access",
    "convert_checkpoint",
    "download",
    "hf_cache_location",
    "list_models",
    "model_info",
    "push_to_hub",
    "save_pretrained",
    "verify_cache",
]


def __getattr__(name: str) -> object:
    if name == "from_pretrained":  # one loader, one result type: the class users hold
        raise AttributeError("dcasenet_hub.hub has no from_pretrained; use dcasenet_hub.from_pretrained or "
                             "DcaseNet.from_pretrained (both give a DcaseNet)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
