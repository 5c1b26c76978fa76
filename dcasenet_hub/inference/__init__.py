"""Audio in, results out: :func:`embed`, :func:`predict`, :func:`iterate` and the class users hold, :class:`DcaseNet`.

=======================  ==========================================================================================
:mod:`.pipeline`         iterate/embed/predict: windows from :mod:`dcasenet_hub.audio`, batched forward passes
:mod:`.options`          :class:`InferenceOptions`: every option of embed/predict/iterate, declared and checked once
:mod:`.settings`         what one call fixed (:class:`CallSettings`), embedding sizes and :class:`Result`
:mod:`.jobs`             one input's windows, shifted passes of a finer hop and merged outputs
:mod:`.batching`         decoding ahead in threads; windows of equal length grouped into forward passes
:mod:`.outputs`          :class:`Embeddings`, :class:`Prediction`, event lists and output files
:mod:`.runner`           the optimised (or onnxruntime) model copy that runs the batches, cached per model
:mod:`.model`            :class:`DcaseNet` (network + hub mixin + embed/predict), :func:`build_model`
=======================  ==========================================================================================
"""

from dcasenet_hub.inference.model import DcaseNet, build_model, from_pretrained
from dcasenet_hub.inference.options import BACKENDS, InferenceOptions
from dcasenet_hub.inference.outputs import Embeddings, Prediction, detect_events
from dcasenet_hub.inference.pipeline import (
    LAYERS,
    POOLINGS,
    EmbeddingSize,
    Result,
    allowed_hops,
    embed,
    embedding_size,
    iterate,
    predict,
)
from dcasenet_hub.inference.runner import inference_runner

__all__ = [
    "BACKENDS",
    "LAYERS",
    "POOLINGS",
    "DcaseNet",
    "EmbeddingSize",
    "Embeddings",
    "InferenceOptions",
    "Prediction",
    "Result",
    "allowed_hops",
    "build_model",
    "detect_events",
    "embed",
    "embedding_size",
    "from_pretrained",
    "inference_runner",
    "iterate",
    "predict",
]
