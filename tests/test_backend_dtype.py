"""`--dtype` / `--backend` on the command line and `backend=` in the API: same outputs (equality, not speed)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main
from dcasenet_hub.inference.pipeline import embed, predict


def _clip(seconds: float, seed: int, sr: int = 24000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t) * (t % 1 < 0.5)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, responsive_v3):
    root = tmp_path_factory.mktemp("bd")
    audio = root / "audio"
    audio.mkdir()
    for i in range(2):
        sf.write(audio / f"c{i}.wav", _clip(3.0 + i, i), 24000)
    model_dir = root / "model"
    responsive_v3.save_pretrained(model_dir)
    return {"audio": audio, "model": model_dir}


def _npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_api_onnxruntime_backend_equals_torch(responsive_v3):
    wav = _clip(7.0, 3)
    ref = embed(responsive_v3, wav, sample_rate=24000)
    ort = embed(responsive_v3, wav, sample_rate=24000, backend="onnxruntime")
    assert np.abs(ort.frame - ref.frame).max() <= 1e-5 and np.abs(ort.clip - ref.clip).max() <= 1e-5
    p_ref = predict(responsive_v3, wav, sample_rate=24000)
    p_ort = predict(responsive_v3, wav, sample_rate=24000, backend="onnxruntime")
    for k in ("scene_probs", "tag_probs", "event_probs"):
        assert np.abs(getattr(p_ort, k) - getattr(p_ref, k)).max() <= 1e-5, k
    other = embed(responsive_v3, _clip(7.0, 4), sample_rate=24000)  # the check can fail: other audio is far off
    assert np.abs(other.frame - ref.frame).max() > 1e-2
    with pytest.raises(ValueError, match="backend='tensorrt': must be one of 'torch', 'onnxruntime'"):
        embed(responsive_v3, wav, sample_rate=24000, backend="tensorrt")
    with pytest.raises(ValueError, match="not in the exported ONNX graph"):
        embed(responsive_v3, wav, sample_rate=24000, backend="onnxruntime", layer="conv")


def test_cli_backend_and_dtype_outputs_and_resume(folder, tmp_path):
    common = ["--model", str(folder["model"]), "-q"]
    out = {name: tmp_path / name for name in ("torch", "ort", "bf16")}
    assert main(["embed", str(folder["audio"]), "-o", str(out["torch"]), *common]) == 0
    assert main(["embed", str(folder["audio"]), "-o", str(out["ort"]), "--backend", "onnxruntime", *common]) == 0
    assert main(["embed", str(folder["audio"]), "-o", str(out["bf16"]), "--dtype", "bf16", *common]) == 0
    for i in range(2):
        ref, ort, low = (_npz(out[n] / f"c{i}.npz") for n in ("torch", "ort", "bf16"))
        assert np.abs(ort["frame"] - ref["frame"]).max() <= 1e-5
        cos = float(low["clip"] @ ref["clip"] / (np.linalg.norm(low["clip"]) * np.linalg.norm(ref["clip"])))
        assert cos > 0.9995 and not np.array_equal(low["frame"], ref["frame"])  # bf16 ran, close to fp32
        assert json.loads(str(low["meta"]))["dtype"] == "bf16" and json.loads(str(ref["meta"]))["dtype"] == "fp32"
    # outputs of another precision are not "complete" for an fp32 rerun: recomputed, not skipped
    assert main(["embed", str(folder["audio"]), "-o", str(out["bf16"]), *common]) == 0
    rows = (out["bf16"] / "index.csv").read_text()
    assert "skipped" not in rows
    assert np.abs(_npz(out["bf16"] / "c0.npz")["frame"] - _npz(out["torch"] / "c0.npz")["frame"]).max() == 0
    # predict with onnxruntime gives the torch JSON within 1e-5
    assert main(["predict", str(folder["audio"]), "-o", str(tmp_path / "p1"), *common]) == 0
    assert main(["predict", str(folder["audio"]), "-o", str(tmp_path / "p2"), "--backend", "onnxruntime",
                 *common]) == 0
    a = json.loads((tmp_path / "p1" / "c1.json").read_text())
    b = json.loads((tmp_path / "p2" / "c1.json").read_text())
    assert max(abs(a["scene"]["probs"][k] - b["scene"]["probs"][k]) for k in a["scene"]["probs"]) <= 1e-5


@pytest.mark.parametrize("extra, message", [
    (["--backend", "onnxruntime", "--dtype", "bf16"], "runs fp32"),
    (["--backend", "onnxruntime", "--layer", "conv"], "not in the exported ONNX graph"),
    (["--dtype", "int8", "--layer", "conv"], "--layer conv: is not in the exported ONNX graph that dtype='int8' runs"),
    (["--dtype", "int8", "--backend", "torch"], "--backend torch: dtype='int8' runs only on the onnxruntime backend; "
                                                "leave backend unset or use backend='onnxruntime'"),
    (["--dtype", "int4"], "invalid choice"),
])
def test_cli_backend_dtype_usage_errors(folder, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) if "invalid choice" in message else contextlib.nullcontext():
        code = main(["embed", str(folder["audio"]), "-o", str(tmp_path / "x"), "--model", str(folder["model"]), "-q",
                     *extra])
        assert code == 2
    assert message in capsys.readouterr().err



def test_int8_with_backend_torch_given_is_refused_not_run_on_onnxruntime(responsive_v3):
    """int8 exists only as the onnxruntime graph: a backend given as torch contradicts it (the default torch, not
    given, gives way to onnxruntime)."""
    from dcasenet_hub.batch import BatchOptions
    from dcasenet_hub.errors import OptionsError
    from dcasenet_hub.inference import InferenceOptions

    refused = "^backend='torch': dtype='int8' runs only on the onnxruntime backend; leave backend unset or use"
    with pytest.raises(OptionsError, match=refused):
        embed(responsive_v3, _clip(2.0, 1), sample_rate=24000, dtype="int8", backend="torch")
    with pytest.raises(OptionsError, match=refused):
        responsive_v3.predict(_clip(2.0, 1), sample_rate=24000, options=InferenceOptions(dtype="int8"),
                              backend="torch")
    with pytest.raises(OptionsError, match=refused):
        BatchOptions(task="embed", dtype="int8", backend="torch")
    assert BatchOptions(task="embed", dtype="int8").backend == "onnxruntime"
    assert InferenceOptions.merge(None, {"dtype": "int8", "backend": "onnxruntime"}, caller="embed").dtype == "int8"


def test_int8_needs_the_model_it_quantizes(responsive_v3):
    """int8 quantizes a checkpoint's weights: an optimised copy (batch-norm folded) would be quantized as another
    model, so it is refused with the fix instead of silently running that graph or fp32."""
    from dcasenet_hub import optimize_for_inference
    from dcasenet_hub.errors import OptionsError

    with pytest.raises(OptionsError, match="dtype='int8': quantizes a model's weights; pass the DcaseNet loaded"):
        embed(optimize_for_inference(responsive_v3), _clip(2.0, 1), sample_rate=24000, dtype="int8")


def test_fp16_on_the_cpu_is_advised_against_once_per_model(caplog):
    from dcasenet_hub import build_model

    model = build_model("v3", seed=0).eval()  # its own: no fp16 copy made by an earlier test
    with caplog.at_level("WARNING", logger="dcasenet_hub"):
        embed(model, _clip(2.0, 0), sample_rate=24000, dtype="fp16")
        embed(model, _clip(2.0, 1), sample_rate=24000, dtype="fp16")
    advice = [r for r in caplog.records if "float16 autocast on CPU" in r.getMessage()]
    assert len(advice) == 1, [r.getMessage() for r in advice]
