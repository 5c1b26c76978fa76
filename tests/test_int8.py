"""int8 on the CPU (:func:`dcasenet_hub.export.quantize.quantize_int8`, not offered as a ``dtype``): the quantized
graph agrees with fp32 within the tolerance docs/performance.md states for recording-like input (sources over a
noise floor), it is really quantized, and its known failure on pure tones is what keeps it from being a ``dtype``.

Stated tolerance (:data:`INT8_COSINE`, :data:`INT8_PROB_TOLERANCE`), for sources over a noise floor, with weights
whose outputs respond to their input: clip-embedding cosine >= 0.995, the same top scene, probabilities within 0.05
(measured in benchmarks/int8.py and the prototype runs: cosine >= 0.9996, tags 0.032, scenes 0.023, events 0.045).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

# exporting and quantizing v3 (a calibration pass) takes 20-30 s of CPU, over the default suite's budget: CI runs it
# with the integration tests
pytestmark = pytest.mark.integration

INT8_COSINE = 0.995
INT8_PROB_TOLERANCE = 0.05
SR = 24000


def _mixtures() -> list[np.ndarray]:
    """Six 6 s clips like recordings: one or two gated sources over a noise floor, another seed than calibration."""
    rng = np.random.default_rng(5)
    t = np.arange(SR * 6) / SR
    out = []
    for i in range(6):
        x = 0.03 * rng.standard_normal(t.size)
        x += 0.3 * np.sin(2 * np.pi * (250 + 450 * i) * t) * (t % (0.5 + i / 4) < 0.3)
        if i % 2:
            x += (np.arange(t.size) % (2000 + 700 * i) < 60) * 0.4 * rng.standard_normal(t.size)
        out.append(x.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def graphs(responsive_v3, tmp_path_factory):
    """fp32 and int8 onnxruntime sessions of the responsive weights, and their outputs on the clips' log-mel."""
    import torch

    from dcasenet_hub.audio import log_mel
    from dcasenet_hub.export.onnx import export_onnx, onnx_session, run_onnx
    from dcasenet_hub.export.quantize import quantize_int8

    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(responsive_v3, folder / "fp32.onnx", check=False)
    int8 = quantize_int8(responsive_v3, folder / "int8.onnx", fp32_path=fp32)
    mels = [log_mel(torch.from_numpy(x)).reshape(1, 1, 128, -1).numpy() for x in _mixtures()]
    tone = log_mel(torch.from_numpy((0.3 * np.sin(2 * np.pi * 1000 * np.arange(SR * 6) / SR)).astype(np.float32)))
    mels.append(tone.reshape(1, 1, 128, -1).numpy())
    s32, s8 = onnx_session(fp32), onnx_session(int8)
    return int8, [run_onnx(s32, m) for m in mels], [run_onnx(s8, m) for m in mels]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_int8_agrees_with_fp32_within_the_stated_tolerance(graphs):
    _, ref, got = graphs
    for a, b in zip(ref[:-1], got[:-1]):
        assert _cos(a["clip_embeddings"][0], b["clip_embeddings"][0]) >= INT8_COSINE
        assert a["scene_logits"][0].argmax() == b["scene_logits"][0].argmax()
        assert np.abs(_softmax(a["scene_logits"][0]) - _softmax(b["scene_logits"][0])).max() <= INT8_PROB_TOLERANCE
        assert np.abs(_sigmoid(a["tag_logits"]) - _sigmoid(b["tag_logits"])).max() <= INT8_PROB_TOLERANCE
        assert np.abs(a["event_probs"] - b["event_probs"]).max() <= INT8_PROB_TOLERANCE
        assert all(np.isfinite(v).all() for v in b.values())
    # the clips differ from each other far more than int8 moves them: the agreement is not vacuous
    clips = np.stack([r["clip_embeddings"][0] for r in ref[:-1]])
    assert min(_cos(clips[0], c) for c in clips[1:]) < INT8_COSINE - 0.05


def test_a_pure_tone_is_outside_the_tolerance(graphs):
    """Why int8 is not a dtype of embed/predict: a pure 1 kHz tone (no noise floor) moves its clip embedding past the
    stated tolerance (cosine 0.95 in the measurements). If this starts to hold, int8 may be offered: re-measure."""
    _, ref, got = graphs
    assert _cos(ref[-1]["clip_embeddings"][0], got[-1]["clip_embeddings"][0]) < INT8_COSINE


def test_int8_graph_quantizes_the_trunk_convolutions(graphs):
    import onnx

    from dcasenet_hub.export.quantize import trunk_nodes

    path, ref, got = graphs
    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert len(trunk_nodes("v3")) == 9
    for name in trunk_nodes("v3"):
        assert convs[name].input[0] in dequantized and convs[name].input[1] in dequantized, name
    first = convs["/conv_block1/conv1/Conv"]
    assert first.input[1] not in dequantized  # the first convolution stays fp32
    assert not np.array_equal(ref[0]["clip_embeddings"], got[0]["clip_embeddings"])
