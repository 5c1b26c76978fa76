"""dcasenet-hub: DcaseNet (Jung et al., ICASSP 2021) as a pretrained model.

One CNN-RNN for acoustic scene classification, audio tagging and sound event detection, with
``from_pretrained()``, embeddings and predictions from audio files, fine-tuning and retraining.

Example:
    >>> import dcasenet_hub
    >>> model = dcasenet_hub.DcaseNet.from_pretrained("dcasenet-v3")       # doctest: +SKIP
    >>> emb = model.embed("street.wav")                                     # doctest: +SKIP
    >>> emb.clip.shape                                                      # doctest: +SKIP
    (512,)

Importing this package is cheap: torch and the other heavy modules load on first use of a name that needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily on first attribute access)
_LAZY = {
    "DcaseNet": "models",
    "DcaseNetOutput": "models",
    "build_model": "models",
    "CheckpointMismatchError": "models",
    "InputTooShortError": "models",
    "ModelConfig": "config",
    "FrontendConfig": "config",
    "load_audio": "frontend",
    "resample": "frontend",
    "log_mel": "frontend",
    "AudioLoadError": "frontend",
    "list_models": "hub",
    "from_pretrained": "hub",
    "finetune": "finetuning",
    "labels": None,
    "metrics": None,
    "hear": None,
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import hear, labels, metrics
    from .config import FrontendConfig, ModelConfig
    from .finetuning import finetune
    from .frontend import AudioLoadError, load_audio, log_mel, resample
    from .hub import from_pretrained, list_models
    from .models import CheckpointMismatchError, DcaseNet, DcaseNetOutput, InputTooShortError, build_model


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dcasenet_hub' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
