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

# public name -> module that defines it (imported lazily on first attribute access; None: the module itself)
_LAZY = {
    "DcaseNet": "inference.model",
    "build_model": "inference.model",
    "from_pretrained": "inference.model",
    "DcaseNetOutput": "models.dcasenet",
    "optimize_for_inference": "models.fast",
    "ModelConfig": "config",
    "FrontendConfig": "config",
    "load_audio": "audio.io",
    "resample": "audio.resampling",
    "log_mel": "audio.features",
    "list_models": "hub.api",
    "embed": "inference.pipeline",
    "predict": "inference.pipeline",
    "Embeddings": "inference.outputs",
    "Prediction": "inference.outputs",
    "read_embeddings": "batch.tables",
    "finetune": "finetuning.loop",
    "FinetuneOptions": "finetuning.options",
    "AudioLoadError": "errors",
    "InputTooShortError": "errors",
    "CheckpointMismatchError": "errors",
    "UnknownModelError": "errors",
    "errors": None,
    "labels": None,
    "metrics": None,
    "hear": None,
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub import errors, hear, labels, metrics
    from dcasenet_hub.audio.features import log_mel
    from dcasenet_hub.audio.io import load_audio
    from dcasenet_hub.audio.resampling import resample
    from dcasenet_hub.config import FrontendConfig, ModelConfig
    from dcasenet_hub.errors import (
        AudioLoadError,
        CheckpointMismatchError,
        InputTooShortError,
        UnknownModelError,
    )
    from dcasenet_hub.finetuning.loop import finetune
    from dcasenet_hub.finetuning.options import FinetuneOptions
    from dcasenet_hub.hub.api import list_models
    from dcasenet_hub.inference.model import DcaseNet, build_model, from_pretrained
    from dcasenet_hub.inference.outputs import Embeddings, Prediction
    from dcasenet_hub.inference.pipeline import embed, predict
    from dcasenet_hub.batch.tables import read_embeddings
    from dcasenet_hub.models.dcasenet import DcaseNetOutput
    from dcasenet_hub.models.fast import optimize_for_inference


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dcasenet_hub' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # the public names and the module's own dunders; not what the module imports for itself (Any, importlib ...)
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__") and n.endswith("__")})
