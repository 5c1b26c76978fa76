"""int8 on the CPU (``dtype="int8"``, :func:`dcasenet_hub.export.quantize.quantize_int8`'s graph on onnxruntime): the
quantized graph agrees with fp32 within the tolerance docs/performance.md states for recording-like input (sources
over a noise floor), it is really quantized, ``embed``/``predict`` and the command line run it and record it, and its
known failure on pure tones (the limit docs/performance.md names) still holds.

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
    """The limit docs/performance.md states for int8: a pure 1 kHz tone (no noise floor) moves its clip embedding past
    the stated tolerance (cosine 0.95 in the measurements). If this starts to hold, the docs' limit is out of date."""
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


def test_dtype_int8_through_embed_predict_and_the_command_line(responsive_v3, tmp_path):
    """``dtype="int8"`` runs the quantized graph through the public pipeline (cached once per weights) within the
    stated tolerance; ``--dtype int8`` writes outputs that record it, and an fp32 rerun recomputes them.

    Broken variants caught: int8 silently running fp32 (outputs equal to fp32's), the int8 graph not cached (a
    second call quantizes again), outputs recorded as fp32 (the rerun would skip them)."""
    import json

    import soundfile as sf

    from dcasenet_hub.cli import main
    from dcasenet_hub.hub.cache import cache_dir_location
    from dcasenet_hub.inference.pipeline import embed, predict

    clips = _mixtures()[:3]
    e32 = embed(responsive_v3, clips, sample_rate=SR)
    e8 = embed(responsive_v3, clips, sample_rate=SR, dtype="int8")
    cached = sorted((cache_dir_location() / "onnx").glob("*-int8.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    p32 = predict(responsive_v3, clips, sample_rate=SR)
    p8 = predict(responsive_v3, clips, sample_rate=SR, dtype="int8")
    assert cached[0].stat().st_mtime_ns == stamp  # the second int8 call reused the graph
    for a, b, q32, q8 in zip(e32, e8, p32, p8):
        assert _cos(a.clip, b.clip) >= INT8_COSINE and not np.array_equal(a.frame, b.frame)  # int8 ran
        assert q32.top_scene == q8.top_scene
        for k in ("scene_probs", "tag_probs", "event_probs"):
            assert np.abs(getattr(q32, k) - getattr(q8, k)).max() <= INT8_PROB_TOLERANCE, k

    audio, model_dir, out = tmp_path / "audio", tmp_path / "model", tmp_path / "out"
    audio.mkdir()
    for i, x in enumerate(clips[:2]):
        sf.write(audio / f"c{i}.wav", x, SR, subtype="FLOAT")
    responsive_v3.save_pretrained(model_dir)
    common = ["embed", str(audio), "-o", str(out), "--model", str(model_dir), "-q"]
    assert main([*common, "--dtype", "int8"]) == 0
    with np.load(out / "c0.npz") as z:
        meta, clip8 = json.loads(str(z["meta"])), z["clip"]
    assert meta["dtype"] == "int8" and meta["backend"] == "onnxruntime"
    assert _cos(clip8, e8[0].clip) > 0.99999  # the same int8 graph as the API's
    assert main(common) == 0  # fp32 now: the int8 files are not complete for it
    with np.load(out / "c0.npz") as z:
        assert json.loads(str(z["meta"]))["dtype"] == "fp32"
        np.testing.assert_allclose(z["clip"], e32[0].clip, rtol=0, atol=1e-5)


def test_int8_without_vnni_warns_that_it_is_slower(monkeypatch, caplog):
    """On a CPU whose flags say it lacks VNNI and AMX-INT8, dtype='int8' says once that fp32 is usually faster
    (measured 0.44-0.83x there); where the flags show them, it says nothing. Broken variant: no warning, or a warning
    on every CPU."""
    import logging

    import dcasenet_hub.inference.runner as runner
    from dcasenet_hub import build_model
    from dcasenet_hub.inference.pipeline import embed

    clip = _mixtures()[0][: SR * 2]
    for has_vnni in (True, False):
        model = build_model("v3", seed=0).eval()  # a fresh model: its int8 copy is built, not reused
        monkeypatch.setattr(runner, "cpu_int8_dot_products", lambda has=has_vnni: has)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dcasenet_hub"):
            embed(model, [clip, clip], sample_rate=SR, dtype="int8")
        said = [r.getMessage() for r in caplog.records if "VNNI" in r.getMessage()]
        assert len(said) == (0 if has_vnni else 1), said
