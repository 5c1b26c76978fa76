"""int8 on CPU: the exported graph with its trunk convolutions statically quantized by onnxruntime.

onnxruntime's static quantization (QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration)
of the convolutional trunk (``conv_block1.conv2`` to ``conv_block4*``: > 95 % of the FLOPs). The first convolution
(one input channel, little work), the scene branch, the GRUs and the heads stay fp32: quantizing them as well
changed scene decisions more for little speed (docs/performance.md, "int8"). Calibration audio is derived
deterministically here (:func:`calibration_signals`), so the same weights always give the same int8 graph.
``embed``/``predict`` run it with ``dtype="int8"`` (cached per weights by :mod:`dcasenet_hub.export.runtime`).

Example:
    >>> from dcasenet_hub.export.quantize import quantize_int8          # doctest: +SKIP
    >>> quantize_int8(model, "dcasenet-v3-int8.onnx")                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dcasenet_hub._io import atomic_write
from dcasenet_hub.errors import OnnxUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from dcasenet_hub.models.dcasenet import DcaseNetModule

logger = logging.getLogger(__name__)

#: Calibration: this many 5 s and 10 s signals (seeded), passed through the fp32 graph one at a time.
CALIBRATION_5S = 12
CALIBRATION_10S = 4


def trunk_nodes(arch: str) -> list[str]:
    """Names of the exported graph's trunk convolutions that are quantized (all but the first)."""
    blocks = ("1", "2", "3", "4_1", "4_2") if arch == "v3" else ("1", "2", "3", "4")
    names = [f"/conv_block{b}/conv{c}/Conv" for b in blocks for c in (1, 2)]
    return names[1:]


def calibration_signals(sample_rate: int, *, seconds: float, count: int, seed: int) -> list[np.ndarray]:
    """``count`` seeded signals of ``seconds``: noise floors of random level with 1-3 sources each (tones, tones with
    a harmonic, sweeps or clicks, at 150 Hz-9 kHz, gated by 0.5-8 Hz rhythms), float32.

    They span the levels and spectra the trunk's activations meet (quiet to loud, tonal to impulsive); the
    activation ranges are what calibration measures, not classes.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for _ in range(count):
        x = 0.02 * rng.uniform(0.2, 3.0) * rng.standard_normal(t.size)
        for _ in range(int(rng.integers(1, 4))):
            f = 10 ** rng.uniform(np.log10(150.0), np.log10(9000.0))
            kind = int(rng.integers(0, 4))
            rate = float(rng.choice([0.5, 2.0, 3.0, 5.0, 8.0]))
            gate = np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) > rng.uniform(-1.0, 0.5)
            if kind == 0:
                s = np.sin(2 * np.pi * f * t)
            elif kind == 1:
                s = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(4 * np.pi * f * t)
            elif kind == 2:
                s = np.sin(2 * np.pi * (0.5 * f + f * t / seconds) * t)
            else:
                s = (np.arange(t.size) % int(sample_rate / rate) < 60) * rng.standard_normal(t.size)
            x = x + rng.uniform(0.05, 0.5) * s * gate
        out.append(x.astype(np.float32))
    return out


def calibration_mels(model: DcaseNetModule, *, seed: int = 0) -> list[np.ndarray]:
    """The calibration inputs ``(1, 1, n_mels, frames)``: :data:`CALIBRATION_5S` scene crops and
    :data:`CALIBRATION_10S` 10 s windows, through the package's own front-end."""
    import torch

    from dcasenet_hub.audio import log_mel

    fe = model.config.frontend
    signals = (calibration_signals(fe.sample_rate, seconds=5.0, count=CALIBRATION_5S, seed=seed)
               + calibration_signals(fe.sample_rate, seconds=10.0, count=CALIBRATION_10S, seed=seed + 1))
    return [log_mel(torch.from_numpy(x), config=fe).reshape(1, 1, fe.n_mels, -1).numpy() for x in signals]


def quantize_int8(model: DcaseNetModule, path: str | Path, *, fp32_path: str | Path | None = None) -> Path:
    """Write ``model``'s int8 graph (trunk convolutions quantized, the rest fp32) to ``path``, atomically.

    Args:
        model: The model (not modified).
        path: Output ``.onnx`` file.
        fp32_path: Its exported fp32 graph, when already written (else exported to a temporary file).

    Raises:
        OnnxUnavailableError: onnx or onnxruntime is not installed.
    """
    from dcasenet_hub.export.onnx import export_onnx

    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization as quant
    except ImportError as exc:
        raise OnnxUnavailableError(f"{exc.name or 'onnx'} is not installed; int8 quantization needs the 'onnx' "
                                   'extra: pip install "dcasenet-hub[onnx]"') from exc
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="dcasenet-int8-") as tmp:
        src = Path(fp32_path) if fp32_path is not None else export_onnx(model, Path(tmp) / "fp32.onnx",
                                                                           check=False)
        pre = Path(tmp) / "pre.onnx"
        quant.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        mels = calibration_mels(model)

        class _Reader(quant.CalibrationDataReader):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                self.items = iter(mels)

            def get_next(self) -> dict[str, Any] | None:
                x = next(self.items, None)
                return None if x is None else {"mel": x}

        def writer(out: Path) -> None:
            quant.quantize_static(str(pre), str(out), _Reader(), quant_format=quant.QuantFormat.QDQ,
                                  per_channel=True, nodes_to_quantize=trunk_nodes(model.config.arch),
                                  activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                                  calibrate_method=quant.CalibrationMethod.MinMax)

        atomic_write(path, writer)
    logger.info("int8 graph written to %s", path)
    return path
