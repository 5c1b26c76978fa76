"""The HEAR 2021 API entry point, ``dcasenet_hub.hear`` (implemented in :mod:`dcasenet_hub.integrations.hear`).

HEAR's harness imports a module by name and calls its three functions, so this public module name stays short.

Example:
    >>> from dcasenet_hub import hear
    >>> hear.TIMESTAMP_HOP_S, hear.SAMPLE_RATE
    (0.04, 48000)
"""

from dcasenet_hub.integrations.hear import (
    SAMPLE_RATE,
    TIMESTAMP_HOP_S,
    HearModel,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)

__all__ = ["SAMPLE_RATE", "TIMESTAMP_HOP_S", "HearModel", "get_scene_embeddings", "get_timestamp_embeddings",
           "load_model"]
