"""CUDA paths give the CPU's outputs: exact fp32 (TF32 off) within the fp32 tolerance, TF32 / bf16 / fp16 within the
low-precision one, embed/predict end to end, and a bf16 / AMP training step. Skipped without a CUDA device (the only
tests that skip on CPU); run on a GPU machine with ``python -m pytest tests/test_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcasenet_hub.models.fast import (
    FP32_TOLERANCE,
    LOW_PRECISION_TOLERANCE,
    optimize_for_inference,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FIELDS = ("scene_logits", "tag_logits", "event_probs", "frame_embeddings", "clip_embeddings", "scene_embeddings")


def _max_rel(out: dict, ref: dict) -> dict[str, float]:
    return {k: float((out[k].cpu() - ref[k]).abs().max()) / max(1.0, float(ref[k].abs().max())) for k in FIELDS}


@pytest.fixture(scope="module")
def mel(fixtures_dir):
    return torch.from_numpy(dict(np.load(fixtures_dir / "v3_reference_io.npz"))["short_input"])


def test_cuda_fp32_exact_and_tf32_switch(v3_model, responsive_v3, mel, fixtures_dir):
    io = dict(np.load(fixtures_dir / "v3_reference_io.npz"))
    fast = optimize_for_inference(v3_model, device="cuda")
    assert fast.runtime.options.exact
    out = fast(mel)
    for ours, key in ((out.scene_logits, "asc_logits"), (out.tag_logits, "tag_logits"),
                      (out.event_probs, "sed_probs")):
        expected = io[f"short_{key}"]
        assert np.abs(ours.cpu().numpy() - expected).max() <= FP32_TOLERANCE * max(1.0, np.abs(expected).max()), key
    with torch.no_grad():
        ref = responsive_v3(mel).to_dict()
    exact = _max_rel(optimize_for_inference(responsive_v3, device="cuda")(mel).to_dict(), ref)
    tf32 = _max_rel(optimize_for_inference(responsive_v3, device="cuda", tf32=True)(mel).to_dict(), ref)
    print("exact", exact, "tf32", tf32)
    assert max(exact.values()) <= FP32_TOLERANCE
    assert max(tf32.values()) <= LOW_PRECISION_TOLERANCE


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cuda_low_precision_within_tolerance(responsive_v3, mel, dtype):
    with torch.no_grad():
        ref = responsive_v3(mel).to_dict()
    low = optimize_for_inference(responsive_v3, device="cuda", dtype=dtype)(mel).to_dict()
    assert all(low[k].dtype == torch.float32 and torch.isfinite(low[k]).all() for k in FIELDS)
    err = _max_rel(low, ref)
    print(dtype, err)
    assert max(err.values()) <= LOW_PRECISION_TOLERANCE
    swapped = _max_rel({k: v.flip(0) for k, v in low.items() if k in FIELDS}, ref)
    assert min(swapped.values()) > LOW_PRECISION_TOLERANCE  # the check can fail


def test_cuda_embed_and_predict_equal_cpu(responsive_v3):
    from dcasenet_hub.inference.pipeline import embed, predict

    rng = np.random.default_rng(0)
    t = np.arange(24000 * 7) / 24000
    wav = (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 700 * t) * (t % 2 < 1)).astype(np.float32)
    cpu_e, gpu_e = embed(responsive_v3, wav, sample_rate=24000), embed(responsive_v3, wav, sample_rate=24000,
                                                                        device="cuda")
    assert np.abs(cpu_e.frame - gpu_e.frame).max() <= FP32_TOLERANCE
    cpu_p, gpu_p = predict(responsive_v3, wav, sample_rate=24000), predict(responsive_v3, wav, sample_rate=24000,
                                                                          device="cuda")
    assert np.abs(cpu_p.scene_probs - gpu_p.scene_probs).max() <= FP32_TOLERANCE
    assert np.abs(cpu_p.event_probs - gpu_p.event_probs).max() <= FP32_TOLERANCE
    assert cpu_p.top_scene == gpu_p.top_scene
    responsive_v3.to("cpu")  # the shared fixture stays on the CPU


def test_cuda_features_on_the_gpu_equal_the_cpu_pipeline(responsive_v3, monkeypatch):
    """44.1 kHz input, a finer hop (look-ahead passes) and a padded tail: resampling and features on the GPU (the
    default with the model there) give the CPU pipeline's outputs, as do CPU features with the network on the GPU."""
    import copy

    from dcasenet_hub import audio as W
    from dcasenet_hub.config import WindowConfig
    from dcasenet_hub.inference.pipeline import embed, predict

    model = copy.deepcopy(responsive_v3)
    model.config = responsive_v3.config.replace(windows=WindowConfig(event_window_s=4.0))
    rng = np.random.default_rng(1)
    t = np.arange(int(44100 * 9.3)) / 44100
    wav = (0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 700 * t) * (t % 2 < 1)).astype(np.float32)
    opts = {"sample_rate": 44100, "hop": 0.2, "pad_tail": True}
    cpu_e, cpu_p = embed(model, wav, **opts), predict(model, wav, **opts)
    seen = set()
    real = W.features
    monkeypatch.setattr(W, "features", lambda x, **kw: (seen.add(str(kw.get("device"))), real(x, **kw))[1])
    for on_gpu in (True, False):
        seen.clear()
        where = "model" if on_gpu else "cpu"
        gpu_e = embed(model, wav, device="cuda", feature_device=where, **opts)
        gpu_p = predict(model, wav, device="cuda", feature_device=where, **opts)
        assert seen == ({"cuda"} if on_gpu else {"None"})
        errs = {"frame": np.abs(cpu_e.frame - gpu_e.frame).max(),
                "scene": np.abs(cpu_p.scene_probs - gpu_p.scene_probs).max(),
                "tags": np.abs(cpu_p.tag_probs - gpu_p.tag_probs).max(),
                "events": np.abs(cpu_p.event_probs - gpu_p.event_probs).max()}
        print("features on gpu" if on_gpu else "features on cpu", errs)
        assert max(errs.values()) <= FP32_TOLERANCE


@pytest.mark.parametrize("precision", ["amp", "bf16", "fp32"])
def test_cuda_training_step_is_finite(precision):
    from dcasenet_hub import build_model
    from dcasenet_hub.train.distributed import autocast_args as _autocast_args
    from dcasenet_hub.train.loop import JointStep

    torch.manual_seed(0)
    model = build_model("v2", seed=0).cuda().train()
    gen = torch.Generator().manual_seed(0)
    batches = {"asc": (torch.randn(4, 1, 128, 50, generator=gen), torch.tensor([1, 3, 0, 2])),
               "tag": (torch.randn(4, 1, 128, 50, generator=gen), (torch.rand(4, 80, generator=gen) > 0.9).float()),
               "sed": (torch.randn(4, 1, 128, 80, generator=gen), (torch.rand(4, 16, 14, generator=gen) > 0.8).float())}
    batches = {t: (x.cuda(), y.cuda()) for t, (x, y) in batches.items()}
    losses = JointStep(model)(batches, {}, _autocast_args(precision, torch.device("cuda")))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cuda_features_equal_cpu_features():
    """The feature step on the model's GPU (audio.features.features(device=...)) gives the CPU's features."""
    from dcasenet_hub.audio import features
    from dcasenet_hub.config import FrontendConfig

    x = (np.random.default_rng(3).standard_normal(24000 * 7) * 0.1).astype(np.float32)
    cpu, n_cpu = features(x, frontend=FrontendConfig(), min_frames=40)
    gpu, n_gpu = features(x, frontend=FrontendConfig(), min_frames=40, device="cuda")
    assert gpu.device.type == "cuda" and n_gpu == n_cpu and gpu.shape == cpu.shape
    err = float((gpu.cpu() - cpu).abs().max())
    print("features cuda vs cpu", err)
    assert err <= 1e-3  # normalised features of unit scale; cuFFT vs pocketfft rounding
