"""The class users hold: :class:`DcaseNet` = the network + loading and saving + audio in, results out.

As a torchaudio pipeline bundle, the object answers what users ask first: ``model.sample_rate``, ``model.labels``
(per task), ``model.config``; as huggingface_hub's mixin, ``DcaseNet.from_pretrained`` builds ``cls(config)``.

Example:
    >>> from dcasenet_hub import build_model
    >>> model = build_model("v3", seed=0).eval()
    >>> model.sample_rate, len(model.labels["scene"]), model.embedding_size()
    (24000, 10, EmbeddingSize(frame=512, clip=512))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dcasenet_hub.config import ModelConfig
from dcasenet_hub.hub.mixin import HubMixin
from dcasenet_hub.inference import pipeline
from dcasenet_hub.models.dcasenet import DcaseNetModule, build_network


class DcaseNet(HubMixin, DcaseNetModule):
    """DcaseNet v1, v2 or v3 with scene, tag and event heads, ready for audio.

    Build one with :func:`build_model` (random weights) or :meth:`from_pretrained`; ``model(mel, tasks=...)`` runs
    the network on log-mel features, :meth:`embed` and :meth:`predict` take audio files, arrays or lists of them.

    Args:
        config: Architecture, label names and front-end settings; head sizes follow the label lists.
    """

    # the pipeline's functions are the methods: ``model.embed(x, ...)`` is ``embed(model, x, ...)``, with the same
    # signature and documentation in IDEs and help()
    embed = pipeline.embed
    predict = pipeline.predict

    def embedding_size(self, *, layer: str = "gru", pooling: str = "mean") -> Any:
        """Frame and clip embedding sizes for a layer and pooling: see :func:`dcasenet_hub.inference.embedding_size`.

        Example:
            >>> build_model("v3").embedding_size(layer="conv", pooling="mean+max")
            EmbeddingSize(frame=512, clip=1024)
        """
        return pipeline.embedding_size(self, layer=layer, pooling=pooling)


def build_model(arch: str = "v3", *, config: ModelConfig | None = None, seed: int | None = None) -> DcaseNet:
    """A randomly initialised DcaseNet.

    Args:
        arch: ``"v1"``, ``"v2"`` or ``"v3"`` (also accepted: ``"dcasenet-v3"``).
        config: Full config (labels, front-end); ``arch`` is taken from it when given.
        seed: Seed the initialisation for reproducibility.

    Example:
        >>> build_model("v2").num_parameters()
        9320936
    """
    return build_network(arch, config=config, seed=seed, cls=DcaseNet)


def from_pretrained(name_or_path: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                    device: str | Any | None = None, dtype: str | Any | None = None,
                    local_files_only: bool = False) -> DcaseNet:
    """``DcaseNet.from_pretrained``: the options are those of :func:`dcasenet_hub.hub.api.load_pretrained`.

    An exported ``.onnx`` file (``dcasenet-hub export``) loads as a model that runs it with onnxruntime
    (:func:`dcasenet_hub.export.runtime.load_onnx`; CPU, fp32, the ``onnx`` extra).

    Example:
        >>> model = from_pretrained("dcasenet-v3")  # doctest: +SKIP
    """
    if str(name_or_path).lower().endswith(".onnx") and Path(name_or_path).expanduser().is_file():
        from dcasenet_hub.export.runtime import load_onnx

        unused = [k for k, v in (("device", device), ("dtype", dtype)) if v is not None]
        if unused:
            raise TypeError(f"An .onnx model takes no {', '.join(unused)} (it runs on the CPU in fp32)")
        return load_onnx(name_or_path, cls=DcaseNet)
    return DcaseNet.from_pretrained(name_or_path, revision=revision, cache_dir=cache_dir, device=device, dtype=dtype,
                                    local_files_only=local_files_only)
