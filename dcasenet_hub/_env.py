"""Every environment variable the package reads, each read here and only here, at call time (never at import).

Reading at call time lets a program (or a test) change a variable between calls; reading in one module gives each
variable one parsing (``HF_ENDPOINT`` is stripped and defaulted the same way for the download probe and the Hub
API). The variables are documented in docs/weights.md ("Offline use", "Mirrors") and docs/training.md.

Example:
    >>> import os
    >>> os.environ["HF_ENDPOINT"] = " http://127.0.0.1:8080/ "
    >>> hf_endpoint()
    'http://127.0.0.1:8080'
    >>> del os.environ["HF_ENDPOINT"]
    >>> hf_endpoint()
    'https://huggingface.co'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

#: Values of a boolean variable that mean "on" (case-insensitive).
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
#: The Hugging Face Hub when ``HF_ENDPOINT`` is unset or empty.
DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def text(name: str) -> str:
    """The variable's value without surrounding whitespace (``""`` when unset)."""
    return os.environ.get(name, "").strip()


def flag(name: str) -> bool:
    """Whether the variable is set to 1/true/yes/on."""
    return text(name).lower() in TRUE_VALUES


def path(name: str) -> Path | None:
    """The variable as a path with ``~`` expanded (``None`` when unset or empty)."""
    value = text(name)
    return Path(value).expanduser() if value else None


# ---- Hugging Face -----------------------------------------------------------------------------------------------


def hf_offline() -> bool:
    """``HF_HUB_OFFLINE``: never use the network (huggingface_hub itself reads it only once, at import)."""
    return flag("HF_HUB_OFFLINE")


def hf_endpoint() -> str:
    """``HF_ENDPOINT`` (no trailing slash), else https://huggingface.co."""
    return text("HF_ENDPOINT").rstrip("/") or DEFAULT_HF_ENDPOINT


def hf_cache() -> Path | None:
    """``HF_HUB_CACHE``, else ``$HF_HOME/hub``; ``None`` when neither is set."""
    hub = path("HF_HUB_CACHE")
    if hub is not None:
        return hub
    home = path("HF_HOME")
    return home / "hub" if home is not None else None


# ---- dcasenet-hub -----------------------------------------------------------------------------------------------


def user_cache() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return path("XDG_CACHE_HOME") or Path.home() / ".cache"


def package_cache() -> Path | None:
    """``DCASENET_HUB_CACHE``: the package cache of converted official weights."""
    return path("DCASENET_HUB_CACHE")


def weights_mirror() -> str:
    """``DCASENET_HUB_MIRROR``: a server that replaces the scheme and host of official weight URLs (``""``: none)."""
    return text("DCASENET_HUB_MIRROR")


def extra_manifest() -> Path | None:
    """``DCASENET_HUB_MANIFEST``: a manifest whose entries add to or replace the packaged ones."""
    return path("DCASENET_HUB_MANIFEST")


def data_mirror() -> str:
    """``DCASENET_HUB_DATA_MIRROR``: a base URL that replaces Zenodo for the datasets (``""``: none)."""
    return text("DCASENET_HUB_DATA_MIRROR")


def feature_cache() -> Path | None:
    """``DCASENET_HUB_FEATURES``: where the trainer caches log-mel features."""
    return path("DCASENET_HUB_FEATURES")


# ---- torchrun ---------------------------------------------------------------------------------------------------


class Torchrun(NamedTuple):
    """What torchrun tells each process it starts."""

    rank: int
    world: int
    local_rank: int


def torchrun() -> Torchrun | None:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` when started by torchrun with several processes (``MASTER_ADDR``
    set), else ``None`` (also when the variables are not numbers)."""
    try:
        world = int(text("WORLD_SIZE") or 1)
        rank = int(text("RANK") or 0)
        local = int(text("LOCAL_RANK") or 0)
    except ValueError:
        return None
    if world <= 1 or not text("MASTER_ADDR"):
        return None
    return Torchrun(rank, world, local)


def started_by_torchrun() -> bool:
    """Whether torchrun's agent started this process (``TORCHELASTIC_RUN_ID``, which the agent sets for its
    workers), rather than another launcher that sets the same rank variables."""
    return bool(text("TORCHELASTIC_RUN_ID"))
