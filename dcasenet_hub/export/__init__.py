"""ONNX: export with a check against PyTorch (:mod:`.onnx`) and onnxruntime as an inference backend (:mod:`.runtime`).

This layer sits below :mod:`dcasenet_hub.inference` because ``embed``/``predict`` with ``backend="onnxruntime"`` run
the exported graph (docs/architecture.md).
"""

from dcasenet_hub.export.onnx import (
    DEFAULT_OPSET,
    ONNX_TOLERANCE,
    OUTPUT_NAMES,
    check_onnx,
    export_onnx,
    onnx_metadata,
    onnx_session,
    run_onnx,
)
from dcasenet_hub.export.runtime import OnnxRuntime, onnxruntime_model

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_TOLERANCE",
    "OUTPUT_NAMES",
    "OnnxRuntime",
    "check_onnx",
    "export_onnx",
    "onnx_metadata",
    "onnx_session",
    "onnxruntime_model",
    "run_onnx",
]
