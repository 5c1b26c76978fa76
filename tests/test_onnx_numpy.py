"""ONNX export metadata and axis names; examples/onnx_numpy.py (numpy front-end + onnxruntime, no torch) against
the PyTorch model on the same audio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_numpy.py"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, responsive_v3) -> Path:
    from dcasenet_hub.export.onnx import export_onnx

    return export_onnx(responsive_v3, tmp_path_factory.mktemp("onnx") / "v3.onnx", check=False)


def test_export_names_every_axis_and_carries_labels_and_frontend(exported: Path, responsive_v3) -> None:
    import onnx

    from dcasenet_hub import labels

    proto = onnx.load(str(exported))
    for value in list(proto.graph.input) + list(proto.graph.output):
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            assert dim.denotation, (value.name, i)
            assert dim.dim_param in ("", dim.denotation) and "Reshape" not in dim.dim_param, (value.name, i)
            assert dim.dim_param or dim.dim_value > 0, (value.name, i)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    assert dims["event_probs"] == ["batch", "event_steps", 14] and dims["scene_logits"] == ["batch", 10]
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["dcasenet_hub.labels"] == {"scene_logits": list(labels.SCENES), "tag_logits": list(labels.TAGS),
                                           "event_probs": list(labels.EVENTS)}
    assert meta["dcasenet_hub.sample_rate"] == 24000
    fe = responsive_v3.config.frontend.to_dict()
    assert {k: meta["dcasenet_hub.frontend"][k] for k in fe} == fe
    assert meta["dcasenet_hub.normalisation"]["std_floor"] == fe["std_floor"]
    assert meta["dcasenet_hub.model"]["trained_tasks"] == list(responsive_v3.config.trained_tasks)


@pytest.mark.parametrize("rate", [24000, 44100])
def test_numpy_example_matches_pytorch_without_importing_torch(exported: Path, responsive_v3, tmp_path: Path,
                                                               rate: int) -> None:
    import soundfile as sf

    from dcasenet_hub import load_audio, log_mel

    t = np.arange(int(3.3 * rate)) / rate
    rng = np.random.default_rng(1)
    sig = 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5) + 0.05 * rng.standard_normal(len(t))
    audio = tmp_path / f"clip{rate}.wav"
    sf.write(str(audio), np.stack([sig, 0.5 * sig], axis=1), rate, subtype="PCM_16")
    out_npz = tmp_path / "out.npz"
    code = ("import runpy, sys; sys.argv = ['onnx_numpy.py', sys.argv[1], sys.argv[2], '--save', sys.argv[3]]; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__'); "
            "print('TORCH_IMPORTED', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(exported), str(audio), str(out_npz)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_IMPORTED False" in proc.stdout
    assert "scene:" in proc.stdout and "events (max over time):" in proc.stdout
    got = np.load(out_npz)
    wav, _ = load_audio(audio, sample_rate=24000)
    mel = log_mel(wav)[None, None]
    with torch.no_grad():
        ref = responsive_v3(mel)
    for name in ("scene_logits", "tag_logits", "event_probs", "frame_embeddings", "clip_embeddings",
                 "scene_embeddings"):
        expected = getattr(ref, name).numpy()
        assert got[name].shape == expected.shape, name
        diff = float(np.abs(got[name] - expected).max())
        assert diff <= 1e-4, (name, diff)
    # and what a user of predict() sees for the same file: tags and the event roll of the whole clip (one window
    # for inputs up to 60 s) within 1e-4 (scene probabilities average 5-s crops there, so they are not comparable)
    from dcasenet_hub.inference.pipeline import predict

    pred = predict(responsive_v3, audio)
    tag_probs = 1.0 / (1.0 + np.exp(-got["tag_logits"][0]))
    assert float(np.abs(tag_probs - pred.tag_probs).max()) <= 1e-4
    events = got["event_probs"][0]
    assert events.shape == pred.event_probs.shape
    assert float(np.abs(events - pred.event_probs).max()) <= 1e-4


def test_an_exported_onnx_file_is_a_model_for_the_onnxruntime_backend(exported: Path, responsive_v3, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    from dcasenet_hub import from_pretrained
    from dcasenet_hub.cli import main
    from dcasenet_hub.inference.pipeline import embed

    t = np.arange(3 * 24000) / 24000
    wav = (0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", wav, 24000, subtype="FLOAT")  # the same samples as the array
    model = from_pretrained(exported)
    assert model.labels == responsive_v3.labels and model.config.provenance == responsive_v3.config.provenance
    ref = embed(responsive_v3, wav, sample_rate=24000)
    np.testing.assert_allclose(model.embed(wav, sample_rate=24000).clip, ref.clip, atol=1e-5)
    with pytest.raises(RuntimeError, match="Save the original"):
        model.save_pretrained(tmp_path / "nope")
    out = tmp_path / "emb.npz"
    assert main(["embed", str(tmp_path / "clip.wav"), "--model", str(exported), "--backend", "onnxruntime",
                 "-o", str(out), "-q"]) == 0
    with np.load(out) as z:
        np.testing.assert_allclose(z["clip"], ref.clip, atol=1e-5)
    capsys.readouterr()
    assert main(["embed", str(tmp_path / "clip.wav"), "--model", str(exported), "-o", str(tmp_path / "e2.npz")]) == 2
    assert "--backend onnxruntime" in capsys.readouterr().err
    # a damaged graph (cut short, or not ONNX at all) is a model error (exit 3, one line), not a bug (exit 4:
    # onnxruntime's InvalidProtobuf is no OSError, RuntimeError or ValueError)
    for name, data in (("cut.onnx", exported.read_bytes()[:1000]), ("text.onnx", b"not onnx\n")):
        (tmp_path / name).write_bytes(data)
        assert main(["embed", str(tmp_path / "clip.wav"), "--model", str(tmp_path / name), "--backend",
                     "onnxruntime", "-o", str(tmp_path / f"{name}.npz")]) == 3, name
        err = capsys.readouterr().err
        assert f"{tmp_path / name} is not a readable ONNX graph" in err and len(err.strip().splitlines()) == 1
    # dcasenet metadata on another graph: a model error when loaded, not a failure inside onnxruntime (exit 4)
    import onnx
    from onnx import TensorProto, helper

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 128]) for n in ("mel", "scene_logits")]
    graph = helper.make_graph([helper.make_node("Identity", ["mel"], ["scene_logits"])], "other", io_[:1], io_[1:])
    other = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    other.metadata_props.extend(onnx.load(exported).metadata_props)
    onnx.save(other, tmp_path / "other.onnx")
    assert main(["embed", str(tmp_path / "clip.wav"), "--model", str(tmp_path / "other.onnx"), "--backend",
                 "onnxruntime", "-o", str(tmp_path / "other.npz")]) == 3
    assert f"{tmp_path / 'other.onnx'} is not a DcaseNet graph" in capsys.readouterr().err


def test_the_onnxruntime_backend_exports_a_checkpoint_once(responsive_v3, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """Keyed by the weights' content: a fresh copy of the same weights (a new process) loads the cached graph."""
    import copy

    from dcasenet_hub.export import runtime

    monkeypatch.setenv("DCASENET_HUB_CACHE", str(tmp_path / "cache"))
    calls = []
    real = runtime.export_onnx
    monkeypatch.setattr(runtime, "export_onnx", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    mel = torch.randn(1, 1, 128, 80, generator=torch.Generator().manual_seed(0))
    first = runtime.onnxruntime_model(copy.deepcopy(responsive_v3))
    second = runtime.onnxruntime_model(copy.deepcopy(responsive_v3))
    assert len(calls) == 1 and calls[0].parent == tmp_path / "cache" / "onnx"
    torch.testing.assert_close(first(mel).event_probs, second(mel).event_probs, rtol=0, atol=0)
    changed = copy.deepcopy(responsive_v3)
    with torch.no_grad():
        changed.fc_ASC.bias.add_(1.0)
    runtime.onnxruntime_model(changed)
    assert len(calls) == 2 and calls[1] != calls[0]  # other weights, another graph
