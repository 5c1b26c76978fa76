"""torch.hub entry points: ``torch.hub.load("<owner>/dcasenet-hub", "dcasenet_v3")``.

Each entry returns a :class:`dcasenet_hub.DcaseNet` with ``.embed()`` and ``.predict()``.

Example:
    >>> import torch
    >>> model = torch.hub.load("path/to/dcasenet-hub", "dcasenet_v3", source="local")       # doctest: +SKIP
    >>> model = torch.hub.load("path/to/dcasenet-hub", "dcasenet_v3", source="local",
    ...                        weights="best_ASC.pt")                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

dependencies = ["torch", "numpy", "soundfile", "safetensors", "huggingface_hub", "tqdm", "filelock"]


def _load(model_id: str, arch: str, pretrained: bool, weights: str | None, **kwargs: Any) -> Any:
    from dcasenet_hub import build_model, from_pretrained

    if weights is not None:
        return from_pretrained(weights, **kwargs)
    if pretrained:
        return from_pretrained(model_id, **kwargs)
    return build_model(arch, **kwargs)


def dcasenet_v3(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v3 (the authors' network), jointly trained on scenes, tags and events.

    Args:
        pretrained: Load the published weights (``dcasenet-v3``); ``False``: random initialisation.
        weights: Instead, a manifest id, local folder, ``.safetensors`` or authors' ``.pt`` file.
        kwargs: Passed to ``dcasenet_hub.from_pretrained`` (``device``, ``dtype``, ``cache_dir`` ...), or to
            ``build_model`` (``seed``) when ``pretrained=False``.
    """
    return _load("dcasenet-v3", "v3", pretrained, weights, **kwargs)


def dcasenet_v3_finetune_asc(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v3 fine-tuned for acoustic scene classification (authors' weights)."""
    return _load("dcasenet-v3-finetune-asc", "v3", pretrained, weights, **kwargs)


def dcasenet_v3_finetune_tag(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v3 fine-tuned for audio tagging (authors' weights)."""
    return _load("dcasenet-v3-finetune-tag", "v3", pretrained, weights, **kwargs)


def dcasenet_v3_finetune_sed(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v3 fine-tuned for sound event detection (authors' weights)."""
    return _load("dcasenet-v3-finetune-sed", "v3", pretrained, weights, **kwargs)


def dcasenet_v1(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v1 (reconstructed from the paper; no published weights: use ``pretrained=False`` or ``weights=``)."""
    return _load("dcasenet-v1", "v1", pretrained, weights, **kwargs)


def dcasenet_v2(pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> Any:
    """DcaseNet-v2 (reconstructed from the paper; no published weights: use ``pretrained=False`` or ``weights=``)."""
    return _load("dcasenet-v2", "v2", pretrained, weights, **kwargs)
