"""onnxruntime as an inference backend: a model copy whose forward runs the exported ONNX graph (CPU, fp32), or
its int8 version (:mod:`dcasenet_hub.export.quantize`).

``embed``/``predict`` take ``backend="onnxruntime"`` or ``dtype="int8"`` (the CLI's ``--backend onnxruntime`` and
``--dtype int8``) through :func:`dcasenet_hub.inference.runner.inference_runner`, which calls
:func:`onnxruntime_model` here.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from dcasenet_hub.config import TIME_REDUCTION
from dcasenet_hub.errors import InputTooShortError
from dcasenet_hub.export.onnx import DEFAULT_OPSET, OUTPUT_NAMES, export_onnx, onnx_session, run_onnx
from dcasenet_hub.models.dcasenet import (
    DcaseNetModule,
    DcaseNetOutput,
    Runtime,
    frame_times,
    normalise_tasks,
)

logger = logging.getLogger(__name__)


class OnnxRuntime(Runtime):
    """How a copy made by :func:`onnxruntime_model` runs ``forward``: the exported graph in an onnxruntime session
    (CPU, fp32). Every head is computed; the ones not asked for are dropped.

    Args:
        session: The onnxruntime session of the exported graph.
        path: The graph's file.
    """

    def __init__(self, session: Any, path: Path, *, placeholder_weights: bool = False) -> None:
        self.session = session
        self.path = path
        self.placeholder_weights = placeholder_weights

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

    def cannot_save(self) -> str | None:
        if self.placeholder_weights:
            return (f"This model runs the ONNX graph {self.path}; its torch tensors are placeholders, not the "
                    "weights. Save the original DcaseNet instead.")
        return None

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxRuntime:
        return self  # the session and its graph file are read only: copies of the model share them


def _ort_load_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's errors for a file that is not a loadable graph (``InvalidProtobuf`` for a damaged or
    truncated file, ...): they derive from ``Exception`` only."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # onnx_session says what to install
        return ()
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "NotImplemented")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


def load_onnx(path: str | Path, *, cls: type | None = None, threads: int | None = None) -> DcaseNetModule:
    """A model that runs an exported ``.onnx`` file with onnxruntime (CPU, fp32); no torch weights are read.

    The graph's metadata carries the config (labels, front-end, provenance), so ``embed``/``predict`` work as with
    the checkpoint it was exported from. The torch tensors of the returned model are zeros that only hold the
    shapes; saving it is refused.

    Args:
        path: A file written by ``dcasenet-hub export --format onnx`` / :func:`~dcasenet_hub.export.onnx.export_onnx`.
        cls: The model class (default: the bare network; ``from_pretrained`` passes :class:`~dcasenet_hub.DcaseNet`).
        threads: onnxruntime intra-op threads.

    Raises:
        ModelFileError: the file is not an ONNX graph exported by dcasenet-hub.

    Example:
        >>> model = load_onnx("dcasenet-v3.onnx")                     # doctest: +SKIP
        >>> model.predict("examples/audio/knocks.wav").top_scene       # doctest: +SKIP
    """
    import json

    from dcasenet_hub.config import ModelConfig
    from dcasenet_hub.errors import ModelFileError
    from dcasenet_hub.export.onnx import META_PREFIX, OUTPUT_NAMES

    path = Path(path).expanduser()
    try:
        session = onnx_session(path, threads=threads)
    except (OSError, RuntimeError, ValueError, *_ort_load_errors()) as exc:
        raise ModelFileError(f"{path} is not a readable ONNX graph ({' '.join(str(exc).split())[:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if META_PREFIX + "model" not in meta:
        raise ModelFileError(f"{path} has no dcasenet_hub metadata; export it with `dcasenet-hub export --format "
                             "onnx MODEL -o FILE.onnx`")
    try:
        config = ModelConfig.from_dict(json.loads(meta[META_PREFIX + "model"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{path}: its {META_PREFIX}model metadata is not a model config "
                             f"({' '.join(str(exc).split())[:200]}); export the model again") from None
    inputs = [(i.name, len(i.shape)) for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    if inputs != [("mel", 4)] or not set(OUTPUT_NAMES) <= outputs:  # dcasenet metadata on another graph
        raise ModelFileError(f"{path} is not a DcaseNet graph (inputs {inputs}, outputs {sorted(outputs)}; "
                             f"expected one 4-d 'mel' input and {', '.join(OUTPUT_NAMES)}); export it with "
                             "`dcasenet-hub export --format onnx MODEL -o FILE.onnx`")
    with torch.device("meta"):  # shapes only: nothing is initialised, then zeros stand in for the weights
        shell = (cls or DcaseNetModule)(config)
    shell = shell.to_empty(device="cpu")
    with torch.no_grad():
        for t in (*shell.parameters(), *shell.buffers()):
            t.zero_()
    shell.eval()
    for p in shell.parameters():
        p.requires_grad_(False)
    shell.runtime = OnnxRuntime(session, path, placeholder_weights=True)
    return shell


def export_key(model: DcaseNetModule, *, opset: int = DEFAULT_OPSET) -> str:
    """SHA-256 of what an export depends on: every tensor's name, dtype, shape and bytes, the config, the opset and
    the package version (a new exporter may write another graph)."""
    import hashlib
    import json

    from dcasenet_hub import __version__

    h = hashlib.sha256(json.dumps({"config": model.config.to_dict(), "opset": opset, "version": __version__},
                                  sort_keys=True).encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write_graph(model: DcaseNetModule, path: Path, *, int8: bool) -> Path:
    """Export ``model``'s graph to ``path`` (checked against PyTorch), or its int8 version."""
    from dcasenet_hub.export.quantize import quantize_int8

    return quantize_int8(model, path) if int8 else export_onnx(model, path, check=True)


def _cached_export(model: DcaseNetModule, *, int8: bool = False) -> Path | None:
    """The cached graph of ``model`` (exported and checked now if missing; with ``int8``, its quantized version,
    made from the cached fp32 graph), or None if the cache is not writable."""
    from dcasenet_hub.export.quantize import quantize_int8
    from dcasenet_hub.hub.cache import cache_dir_location

    path = cache_dir_location() / "onnx" / f"{export_key(model)}{'-int8' if int8 else ''}.onnx"
    if path.is_file():
        logger.debug("onnxruntime backend: cached graph %s", path)
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if int8:
            fp32 = _cached_export(model)
            if fp32 is None:
                return None
            quantize_int8(model, path, fp32_path=fp32)  # written atomically, like the export
        else:
            export_onnx(model, path, check=True)  # written atomically: a concurrent export leaves one whole file
    except OSError as exc:  # a read-only cache: fall back to a temporary file
        logger.debug("onnxruntime backend: cannot cache the export (%s)", exc)
        return None
    logger.info("onnxruntime backend: %s once, cached in %s",
                "quantized the graph to int8" if int8 else "exported and checked the graph", path)
    return path


def onnxruntime_model(model: DcaseNetModule, *, path: str | Path | None = None, threads: int | None = None,
                      int8: bool = False) -> DcaseNetModule:
    """A copy of ``model`` whose forward runs an exported graph with onnxruntime (CPU, fp32, optional backend).

    Same class, same ``forward(mel, tasks=None)`` signature and
    :class:`~dcasenet_hub.models.dcasenet.DcaseNetOutput` fields; its ``runtime`` is an :class:`OnnxRuntime` (the
    weights stay for ``config`` and device queries). Exporting and checking takes seconds, so the graph is kept in the
    package cache (``<cache>/onnx/<key>.onnx``), keyed by the content of the weights and config, the opset and the
    package version: the next run (any process) of the same weights loads it without exporting. Outputs match
    PyTorch within :data:`ONNX_TOLERANCE` (checked at export). With ``int8``, the graph is
    :func:`~dcasenet_hub.export.quantize.quantize_int8`'s (deterministic calibration, cached the same way under
    ``<key>-int8.onnx``); its outputs are approximate (docs/performance.md, "int8 on the CPU").

    Args:
        model: The model to run (not modified).
        path: Where to write the graph (default: the package cache; a temporary file, deleted when the backend is
            garbage collected, if the cache cannot be written).
        threads: onnxruntime intra-op threads (default: onnxruntime's, one per physical core).
        int8: Run the int8 graph (needs the ``onnx`` package besides onnxruntime).

    Example:
        >>> fast = onnxruntime_model(model)                   # doctest: +SKIP
        >>> fast(mel, tasks=("embeddings",)).clip_embeddings  # doctest: +SKIP
    """
    folder = None
    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).to("cpu")
    if path is not None:
        _write_graph(cpu, Path(path), int8=int8)
    else:
        path = _cached_export(cpu, int8=int8)
        if path is None:  # the cache cannot be written: a temporary folder that lives as long as the backend
            folder = tempfile.mkdtemp(prefix="dcasenet-onnx-")
            path = _write_graph(cpu, Path(folder) / "model.onnx", int8=int8)
    wrapped = copy.deepcopy(cpu)
    wrapped.eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    runtime = OnnxRuntime(onnx_session(path, threads=threads), Path(path))
    if folder is not None:
        weakref.finalize(runtime, shutil.rmtree, folder, ignore_errors=True)
    wrapped.runtime = runtime
    return wrapped
