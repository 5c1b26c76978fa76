"""ONNX export of DcaseNet, with a check that onnxruntime gives the PyTorch outputs.

:func:`export_onnx` writes the network, batch-norm folded, without the front-end: input ``mel`` ``(batch, 1, 128,
frames)`` (dynamic batch and length, ``frames >= 40``), outputs :data:`OUTPUT_NAMES`, the fields of
:class:`~dcasenet_hub.models.dcasenet.DcaseNetOutput` except ``frame_times``. Every axis is named (:data:`AXES`), and
the model's ``metadata_props`` (:func:`onnx_metadata`) carry the labels, front-end settings, normalisation and output
meanings as JSON, so the graph can be used without this package (``examples/onnx_numpy.py``). Shapes and metadata
keys: docs/outputs.md, "ONNX export and its metadata". Needs the ``onnx`` extra (``pip install
"dcasenet-hub[onnx]"``: onnx and onnxruntime).

Example:
    >>> from dcasenet_hub import build_model
    >>> from dcasenet_hub.export.onnx import export_onnx
    >>> path = export_onnx(build_model("v3", seed=0).eval(), "dcasenet-v3.onnx")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcasenet_hub._io import atomic_write
from dcasenet_hub.errors import OnnxUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from dcasenet_hub.models.dcasenet import DcaseNetModule

logger = logging.getLogger(__name__)

#: Names of the graph's outputs, in order.
OUTPUT_NAMES = ("scene_logits", "tag_logits", "event_probs", "frame_embeddings", "clip_embeddings",
                "scene_embeddings")
#: Axis names of the graph's input and outputs; the dynamic ones (batch, frames, steps) are ``dim_param``s.
AXES: dict[str, tuple[str, ...]] = {
    "mel": ("batch", "channel", "mels", "frames"),
    "scene_logits": ("batch", "scenes"),
    "tag_logits": ("batch", "tags"),
    "event_probs": ("batch", "event_steps", "events"),
    "frame_embeddings": ("batch", "steps", "frame_embedding"),
    "clip_embeddings": ("batch", "clip_embedding"),
    "scene_embeddings": ("batch", "scene_embedding"),
}
DYNAMIC_AXES = ("batch", "frames", "event_steps", "steps")
#: Prefix of the keys of the model's ``metadata_props``.
META_PREFIX = "dcasenet_hub."
#: ONNX opset of the exported graph.
DEFAULT_OPSET = 17
#: Opsets this network exports in with torch's exporter (below 13 it fails; 20 is the exporter's newest).
OPSETS = range(13, 21)

#: Max absolute difference between onnxruntime and PyTorch accepted by :func:`check_onnx` (both fp32).
ONNX_TOLERANCE = 1e-4


def check_opset(opset: object) -> int:
    """``opset`` when this network can be exported in it.

    Raises:
        OptionsError: not a whole number in :data:`OPSETS` (a ``ValueError``).

    Example:
        >>> check_opset(18)
        18
    """
    from dcasenet_hub._options import options_error

    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise options_error("opset", opset, f"must be a whole number from {OPSETS.start} to {OPSETS.stop - 1}")
    return opset


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OnnxUnavailableError(
            f"{module} is not installed; ONNX export needs the 'onnx' extra: pip install \"dcasenet-hub[onnx]\""
        ) from exc


def _graph_module(model: DcaseNetModule) -> torch.nn.Module:
    """A module whose forward(mel) returns the output tuple (batch-norm folded, fp32, NCHW, CPU)."""
    import torch

    from dcasenet_hub.models.dcasenet import DcaseNetModule
    from dcasenet_hub.models.fast import optimize_for_inference

    folded = optimize_for_inference(model, dtype=None, channels_last=False, device="cpu")

    class _Graph(torch.nn.Module):
        def __init__(self, net: DcaseNetModule) -> None:
            super().__init__()
            self.net = net

        def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = DcaseNetModule.forward(self.net, mel, None)  # plain forward: traced without inference-mode wrapping
            return tuple(getattr(out, name) for name in OUTPUT_NAMES)

    return _Graph(folded).eval()


def export_onnx(
    model: DcaseNetModule,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    example_frames: int = 251,
    check: bool = True,
) -> Path:
    """Write ``model`` as an ONNX graph (fp32, dynamic batch and length) to ``path``, atomically.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet` (not modified).
        path: Output ``.onnx`` file.
        opset: ONNX opset version.
        example_frames: Frames of the example input used for tracing (any value >= 40 gives the same graph).
        check: Run the written graph with onnxruntime on an input of another length and batch size and compare
            with PyTorch (raises if they differ by more than :data:`ONNX_TOLERANCE`).

    Returns:
        The path written.

    Raises:
        OnnxUnavailableError: onnx (or onnxruntime when ``check``) is not installed.
        OptionsError: an opset outside :data:`OPSETS`.
        ValueError: the exported graph does not reproduce PyTorch's outputs.

    Example:
        >>> export_onnx(model, "dcasenet-v3.onnx")           # doctest: +SKIP
        PosixPath('dcasenet-v3.onnx')
    """
    import torch

    opset = check_opset(opset)
    onnx = _require("onnx")
    if check:
        _require("onnxruntime")
    path = Path(path)
    graph = _graph_module(model)
    example = torch.randn(1, 1, model.config.frontend.n_mels, int(example_frames))
    axes = {name: {i: a for i, a in enumerate(names) if a in DYNAMIC_AXES} for name, names in AXES.items()}
    with torch.no_grad():
        shapes = {"mel": tuple(example.shape)} | {
            name: tuple(t.shape) for name, t in zip(OUTPUT_NAMES, graph(example))}

    def writer(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
            torch.onnx.export(graph, (example,), str(tmp), dynamo=False, input_names=["mel"],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=int(opset),
                              do_constant_folding=True)
        proto = onnx.load(str(tmp))
        _name_axes(proto, shapes)
        for key, value in onnx_metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"DcaseNet-{model.config.arch} exported by dcasenet-hub; see metadata_props"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    atomic_write(path, writer)
    if check:
        diffs = check_onnx(model, path)
        logger.info("ONNX export %s: max |onnxruntime - torch| = %s", path, diffs)
    return path


def _name_axes(proto: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give every axis of the graph's input and outputs its name of :data:`AXES`.

    Dynamic axes get the name as ``dim_param``; fixed axes keep (or get back, where the exporter made up a symbol
    such as ``Reshapeevent_probs_dim_2``) their size as ``dim_value`` and carry the name as ``denotation``.
    """
    for value in list(proto.graph.input) + list(proto.graph.output):
        names = AXES[value.name]
        dims = value.type.tensor_type.shape.dim
        for i, (dim, name) in enumerate(zip(dims, names)):
            if name in DYNAMIC_AXES:
                dim.dim_param = name
            else:
                dim.dim_value = int(shapes[value.name][i])
            dim.denotation = name


def onnx_metadata(model: DcaseNetModule) -> dict[str, str]:
    """The ``metadata_props`` an export carries: everything needed to feed the graph and read its outputs.

    Returns:
        ``{key: JSON string}`` with keys ``dcasenet_hub.labels``, ``.sample_rate``, ``.frontend``,
        ``.normalisation``, ``.axes``, ``.outputs`` and ``.model``.

    Example:
        >>> from dcasenet_hub import build_model
        >>> import json
        >>> json.loads(onnx_metadata(build_model("v3"))["dcasenet_hub.sample_rate"])
        24000
    """
    import json

    cfg = model.config
    fe = cfg.frontend
    steps = "frames // 40"
    meta: dict[str, Any] = {
        "labels": {"scene_logits": list(cfg.scene_labels), "tag_logits": list(cfg.tag_labels),
                   "event_probs": list(cfg.event_labels)},
        "sample_rate": fe.sample_rate,
        "frontend": {
            **fe.to_dict(),
            "steps": ("mono float waveform in [-1, 1) at sample_rate (resampled with a Hann-windowed sinc of "
                      "resample_lowpass_filter_width zero crossings and resample_rolloff, as torchaudio); "
                      "pre-emphasis y[n] = x[n+1] - preemphasis * x[n]; STFT: window of win_length "
                      "(periodic), zero-padded centred to n_fft, hop_length, centred with n_fft // 2 pad_mode "
                      "padding on both sides; |X|^power; mel filters (mel_scale, mel_norm, f_min..f_max, "
                      "n_mels, over n_fft // 2 + 1 bins spaced sample_rate / n_fft); exact zeros replaced by "
                      "zero_floor; natural log; then the normalisation"),
        },
        "normalisation": {
            "method": "per band over time: (x - mean) / max(std, std_floor), over the whole input",
            "std": "unbiased (ddof=1)", "std_floor": fe.std_floor, "zero_floor": fe.zero_floor,
            "log": "natural",
        },
        "axes": {name: list(names) for name, names in AXES.items()},
        "outputs": {
            "mel": "normalised log-mel (batch, 1, n_mels, frames), frames >= 40",
            "scene_logits": "scene logits; softmax over the last axis gives scene probabilities",
            "tag_logits": "tag logits; sigmoid gives tag probabilities",
            "event_probs": (f"event probabilities (sigmoid applied), 8 steps per 40 input frames ({steps} * 8 "
                            f"steps of {40 / fe.frame_rate / 8:g} s)"),
            "frame_embeddings": f"one 512-d embedding per 40 input frames ({steps} steps); step k is centred at "
                                f"(k * 40 + 19.5) / {fe.frame_rate:g} s",
            "clip_embeddings": "512-d clip embedding", "scene_embeddings": "128-d scene embedding",
        },
        "model": cfg.to_dict(),
    }
    return {META_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in meta.items()}


def onnx_session(path: str | Path, *, threads: int | None = None, memory_arena: bool = False) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for an exported graph (all graph optimisations on).

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: onnxruntime's, one per physical core).
        memory_arena: Keep onnxruntime's CPU memory arena. Off by default: the arena keeps the peak of the largest
            batch for the life of the session (1.2 GB after two 60 s windows of v3, 787 MB without it, at the same
            speed; docs/performance.md), so without it memory follows the current batch.
    """
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = bool(memory_arena)
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, mel: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Run an exported graph on ``mel`` ``(B, 1, 128, frames)``; returns ``{output name: array}``."""
    import numpy as np

    arr = mel.detach().cpu().numpy() if hasattr(mel, "detach") else np.asarray(mel)
    outs = session.run(list(OUTPUT_NAMES), {"mel": np.ascontiguousarray(arr, dtype=np.float32)})
    return dict(zip(OUTPUT_NAMES, outs))


def check_onnx(model: DcaseNetModule, path: str | Path, *, batch: int = 2, frames: int = 403,
               seed: int = 0) -> dict[str, float]:
    """Compare onnxruntime on ``path`` with PyTorch ``model`` (fp32) on a random input; returns max abs diffs.

    Raises:
        ValueError: an output differs by more than :data:`ONNX_TOLERANCE` or has another shape.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, 1, model.config.frontend.n_mels, frames, generator=gen)
    param = next(model.parameters())
    reference = model
    if param.device.type != "cpu" or param.dtype != torch.float32:  # compare with an fp32 CPU copy
        import copy

        reference = copy.deepcopy(model).to("cpu", torch.float32)
    was_training = reference.training
    reference.eval()
    try:
        with torch.inference_mode():
            ref = reference(mel)
    finally:
        reference.train(was_training)
    got = run_onnx(onnx_session(path), mel)
    diffs: dict[str, float] = {}
    for name in OUTPUT_NAMES:
        expected = getattr(ref, name).numpy()
        if got[name].shape != expected.shape:
            raise ValueError(f"{path}: ONNX output {name} has shape {got[name].shape}, PyTorch {expected.shape}")
        diffs[name] = float(abs(got[name] - expected).max())
    bad = {k: v for k, v in diffs.items() if not v <= ONNX_TOLERANCE}
    if bad:
        raise ValueError(f"{path}: onnxruntime outputs differ from PyTorch by more than {ONNX_TOLERANCE}: {bad}. "
                         "Re-export with this version of dcasenet-hub and PyTorch, or report the versions.")
    return diffs
