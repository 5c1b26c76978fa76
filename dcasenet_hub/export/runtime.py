"""onnxruntime as an inference backend: a model copy whose forward runs the exported ONNX graph (CPU, fp32).

``embed``/``predict`` take ``backend="onnxruntime"`` (and the CLI ``--backend onnxruntime``) through
:func:`dcasenet_hub.inference.runner.inference_runner`, which calls :func:`onnxruntime_model` here.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.errors import InputTooShortError
from dcasenet_hub.export.onnx import OUTPUT_NAMES, export_onnx, onnx_session, run_onnx
from dcasenet_hub.models.dcasenet import (
    DcaseNetModule,
    DcaseNetOutput,
    Runtime,
    frame_times,
    normalise_tasks,
)


class OnnxRuntime(Runtime):
    """How a copy made by :func:`onnxruntime_model` runs ``forward``: the exported graph in an onnxruntime session
    (CPU, fp32). Every head is computed; the ones not asked for are dropped.

    Args:
        session: The onnxruntime session of the exported graph.
        path: The graph's file.
    """

    def __init__(self, session: Any, path: Path) -> None:
        self.session = session
        self.path = path

    def forward(self, network: DcaseNetModule, mel: torch.Tensor, tasks: Any, *,
                conv_embeddings: bool) -> DcaseNetOutput:
        if conv_embeddings:
            raise ValueError("The onnxruntime backend has no conv_embeddings output (the ONNX graph exports the "
                             "heads and the GRU embeddings); use the torch backend for layer='conv'")
        wanted = normalise_tasks(tasks)
        if mel.dim() != 4 or mel.shape[1] != 1:
            raise ValueError(f"Expected mel of shape (batch, 1, n_mels, frames), got {tuple(mel.shape)}")
        if mel.shape[-1] < TIME_REDUCTION:
            raise InputTooShortError(f"Input has {mel.shape[-1]} frames; DcaseNet needs at least {TIME_REDUCTION}")
        arrays = run_onnx(self.session, mel.detach().float())
        res = {name: torch.from_numpy(arrays[name]).to(mel.device) for name in OUTPUT_NAMES}
        out = DcaseNetOutput()
        if "scene" in wanted:
            out.scene_logits, out.scene_embeddings = res["scene_logits"], res["scene_embeddings"]
        if "tags" in wanted:
            out.tag_logits = res["tag_logits"]
        if "events" in wanted:
            out.event_probs = res["event_probs"]
        if "embeddings" in wanted:
            out.frame_embeddings, out.clip_embeddings = res["frame_embeddings"], res["clip_embeddings"]
            out.frame_times = frame_times(out.frame_embeddings.shape[1], 1.0 / network.config.frontend.frame_rate,
                                           mel.device)
        return out

    def cannot_train(self) -> str:
        return "An onnxruntime-backed model is inference only; train the original DcaseNet."

    def cannot_load(self, source: str) -> str:
        return (f"Cannot load {source} into an onnxruntime-backed model; load it into the original DcaseNet and "
                "build the backend again.")

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxRuntime:
        return self  # the session and its graph file are read only: copies of the model share them


def onnxruntime_model(model: DcaseNetModule, *, path: str | Path | None = None,
                      threads: int | None = None) -> DcaseNetModule:
    """A copy of ``model`` whose forward runs an exported graph with onnxruntime (CPU, fp32, optional backend).

    Same class, same ``forward(mel, tasks=None)`` signature and
    :class:`~dcasenet_hub.models.dcasenet.DcaseNetOutput` fields; its ``runtime`` is an :class:`OnnxRuntime` (the
    weights stay for ``config`` and device queries). Exporting takes a few seconds, once per call of this function.
    Outputs match PyTorch within :data:`ONNX_TOLERANCE` (checked).

    Args:
        model: The model to run (not modified).
        path: Where to write the graph (default: a temporary file, deleted when the backend is garbage collected).
        threads: onnxruntime intra-op threads (default: onnxruntime's, one per physical core).

    Example:
        >>> fast = onnxruntime_model(model)                   # doctest: +SKIP
        >>> fast(mel, tasks=("embeddings",)).clip_embeddings  # doctest: +SKIP
    """
    folder = None
    if path is None:
        folder = tempfile.mkdtemp(prefix="dcasenet-onnx-")
        path = Path(folder) / "model.onnx"
    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).to("cpu")
    export_onnx(cpu, path, check=True)
    wrapped = copy.deepcopy(cpu)
    wrapped.eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    runtime = OnnxRuntime(onnx_session(path, threads=threads), Path(path))
    if folder is not None:
        weakref.finalize(runtime, shutil.rmtree, folder, ignore_errors=True)
    wrapped.runtime = runtime
    return wrapped
