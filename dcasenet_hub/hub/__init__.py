"""Weights: the manifest, verified downloads, the caches, checkpoint formats, model cards and the hub mixin.

This layer stores and fetches configs and state dicts; it builds models only as ``cls(config)`` for the class it is
given (:class:`~dcasenet_hub.hub.mixin.HubMixin`). docs/weights.md describes ids, sources and the cache layout.
"""

from dcasenet_hub.hub.api import (
    CacheCheck,
    ModelInfo,
    cache_dir_location,
    check_hub_access,
    convert_checkpoint,
    download,
    from_pretrained,
    list_models,
    model_info,
    push_to_hub,
    save_pretrained,
    verify_cache,
)
from dcasenet_hub.hub.mixin import HubMixin

__all__ = [
    "CacheCheck",
    "HubMixin",
    "ModelInfo",
    "cache_dir_location",
    "check_hub_access",
    "convert_checkpoint",
    "download",
    "from_pretrained",
    "list_models",
    "model_info",
    "push_to_hub",
    "save_pretrained",
    "verify_cache",
]
