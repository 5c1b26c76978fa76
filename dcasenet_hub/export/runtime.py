"""onnxruntime as an inference backend: a model copy whose forward runs the exported ONNX graph (CPU, fp32).

``embed``/``predict`` take ``backend="onnxruntime"`` (and the CLI ``--backend onnxruntime``) through
:func:`dcasenet_hub.inference.runner.inference_runner`, which calls :func:`onnxruntime_model` here.
"""

from __future__ import annotations

import copy
import functools
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
    frame_times,
    normalise_tasks,
)


class OnnxRuntimeDcaseNet(DcaseNetModule):
    """An inference-only copy whose forward runs the exported graph with onnxruntime (see
    :func:`onnxruntime_model`); CPU, fp32; the weights stay for ``config`` and device queries. Its class also derives
    from the original's (:func:`onnxruntime_class`), so ``embed``/``predict`` keep working."""

    def forward(self, mel: torch.Tensor, tasks: Any = None, *, conv_embeddings: bool = False) -> DcaseNetOutput:
        if conv_embeddings:
            raise ValueError("The onnxruntime backend has no conv_embeddings output (the ONNX graph exports the "
                             "heads and the GRU embeddings); use the torch backend for layer='conv'")

        wanted = normalise_tasks(tasks)
        if mel.dim() != 4 or mel.shape[1] != 1:
            raise ValueError(f"Expected mel of shape (batch, 1, n_mels, frames), got {tuple(mel.shape)}")
        if mel.shape[-1] < TIME_REDUCTION:
            raise InputTooShortError(f"Input has {mel.shape[-1]} frames; DcaseNet needs at least {TIME_REDUCTION}")
        arrays = run_onnx(self.__dict__["_ort_session"], mel.detach().float())
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
            out.frame_times = frame_times(out.frame_embeddings.shape[1], 1.0 / self.config.frontend.frame_rate,
                                           mel.device)
        return out

    def train(self, mode: bool = True) -> OnnxRuntimeDcaseNet:
        if mode:
            raise RuntimeError("An onnxruntime-backed model is inference only; train the original DcaseNet.")
        return DcaseNetModule.train(self, False)

    def load_state_dict_strict(self, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
        raise RuntimeError(f"Cannot load {source} into an onnxruntime-backed model; load it into the original "
                           "DcaseNet and build the backend again.")


@functools.cache
def onnxruntime_class(base: type) -> type:
    """The class of onnxruntime-backed copies of ``base`` models (:class:`OnnxRuntimeDcaseNet` first)."""
    if issubclass(base, OnnxRuntimeDcaseNet):
        return base
    return type(f"OnnxRuntime{base.__name__}", (OnnxRuntimeDcaseNet, base), {"__module__": __name__})




def onnxruntime_model(model: DcaseNetModule, *, path: str | Path | None = None, threads: int | None = None) -> DcaseNetModule:
    """A copy of ``model`` whose forward runs an exported graph with onnxruntime (CPU, fp32, optional backend).

    Same ``forward(mel, tasks=None)`` signature and :class:`~dcasenet_hub.models.dcasenet.DcaseNetOutput` fields as
    :class:`~dcasenet_hub.DcaseNet` (every head is computed; the ones not asked for are dropped). Exporting takes a
    few seconds, once per call of this function. Outputs match PyTorch within :data:`ONNX_TOLERANCE` (checked).

    Args:
        model: The model to run (not modified).
        path: Where to write the graph (default: a temporary file, deleted when the copy is garbage collected).
        threads: onnxruntime intra-op threads (default: onnxruntime's, one per physical core).

    Example:
        >>> fast = onnxruntime_model(model)                   # doctest: +SKIP
        >>> fast(mel, tasks=("embeddings",)).clip_embeddings  # doctest: +SKIP
    """
    cleanup = None
    if path is None:
        folder = tempfile.mkdtemp(prefix="dcasenet-onnx-")
        path = Path(folder) / "model.onnx"

        def cleanup(p: Path = path) -> None:
            import shutil

            shutil.rmtree(p.parent, ignore_errors=True)

    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).to("cpu")
    export_onnx(cpu, path, check=True)
    wrapped = copy.deepcopy(cpu)
    wrapped.__class__ = onnxruntime_class(type(cpu))
    wrapped.eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    wrapped.__dict__["_ort_session"] = onnx_session(path, threads=threads)
    wrapped.__dict__["_ort_path"] = Path(path)
    if cleanup is not None:
        weakref.finalize(wrapped, cleanup)
    return wrapped
