"""Timestamp hop by exact shifted passes, choice of layer and pooling, sizes and file metadata.

The references are written out from the library's own feature function (``dcasenet_hub.audio.features``) and the same
cached forward runner ``embed`` uses, so "exactly" means bit for bit (``np.array_equal``), not a tolerance.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from dcasenet_hub import audio as W
from dcasenet_hub import build_model
from dcasenet_hub.config import WindowConfig
# _nearest: the centre rule itself, checked on exact frame counts that no audio input can isolate
from dcasenet_hub.inference.jobs import _nearest as nearest
from dcasenet_hub.inference.pipeline import (
    Embeddings,
    allowed_hops,
    embed,
    embedding_size,
    predict,
)
from dcasenet_hub.inference.runner import inference_runner

SR = 24000


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    t = np.arange(n) / SR
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.4)
    return x.astype(np.float32)


def _features(model, wav: np.ndarray) -> tuple[torch.Tensor, int]:
    """Normalised log-mel of one window exactly as ``embed`` computes it (whole signal pre-emphasised first)."""
    pre = (wav[1:] - np.float32(0.97) * wav[:-1]).astype(np.float32)
    return W.features(pre, frontend=model.config.frontend, min_frames=model.config.windows.min_frames)


def _passes(model, mel: torch.Tensor, shift: int, tasks=("embeddings", "events"), **kwargs):
    return inference_runner(model)(mel[..., shift:].unsqueeze(1), tasks=tasks, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# hop
# ----------------------------------------------------------------------------------------------------------------


def test_allowed_hops_are_the_divisors_of_the_step():
    assert allowed_hops() == (0.02, 0.04, 0.08, 0.1, 0.16, 0.2, 0.4, 0.8)


def test_hop_0_8_is_todays_output_exactly(v3_model):
    wav = _noise(3.3, seed=1)
    mel, frames = _features(v3_model, wav)
    ref = _passes(v3_model, mel, 0, tasks=("embeddings",))
    default = embed(v3_model, wav, sample_rate=SR)
    explicit = embed(v3_model, wav, sample_rate=SR, hop=0.8)
    n = frames // 40
    for emb in (default, explicit):
        assert np.array_equal(emb.frame, ref.frame_embeddings[0, :n].numpy())
        assert np.array_equal(emb.clip, ref.frame_embeddings[0, :n].numpy().mean(0))
        np.testing.assert_allclose(emb.frame_times, 0.39 + 0.8 * np.arange(n), atol=1e-6, rtol=0)
        assert emb.hop_s == pytest.approx(0.8) and emb.layer == "gru" and emb.pooling == "mean"
    assert np.array_equal(default.frame_times, explicit.frame_times)


@pytest.mark.parametrize("hop", [0.1, 0.04, 0.4])
def test_finer_hop_every_pth_frame_is_the_0_8_output_and_the_others_are_shifted_passes(v3_model, hop):
    wav = _noise(3.3, seed=2)
    mel, frames = _features(v3_model, wav)
    k = round(hop * 50)
    passes = 40 // k
    coarse = embed(v3_model, wav, sample_rate=SR)
    fine = embed(v3_model, wav, sample_rate=SR, hop=hop)
    n = (frames - 40) // k + 1
    assert fine.frame.shape == (n, 512) and fine.frame_times.shape == (n,)
    assert fine.hop_s == pytest.approx(hop)
    # every P-th frame is the 0.8 s output at the same centre, bit for bit
    assert np.array_equal(fine.frame[::passes], coarse.frame)
    assert np.array_equal(fine.frame_times[::passes], coarse.frame_times)
    # true centres, in time order, one per hop
    np.testing.assert_allclose(fine.frame_times, (np.arange(n) * k + 19.5) / 50, atol=1e-6, rtol=0)
    # frame p + j P is step j of a plain forward on the features shifted by p k mel frames
    for p in (1, passes - 1):
        ref = _passes(v3_model, mel, p * k, tasks=("embeddings",)).frame_embeddings[0].numpy()
        got = fine.frame[p::passes]
        assert got.shape[0] == (frames - p * k) // 40
        assert np.array_equal(got, ref[:got.shape[0]])
    # the clip embedding pools the 0.8 s steps, whatever the hop
    assert np.array_equal(fine.clip, coarse.clip)


def test_hop_across_event_windows_runs_on_without_a_gap(v3_model):
    """4 s event windows (60 s by default): an earlier window's shifted passes continue into the next window's first
    samples, normalised with the window's own statistics, so the grid is regular across window boundaries."""
    from dcasenet_hub.audio import log_mel

    model = copy.copy(v3_model)
    model.config = v3_model.config.replace(windows=WindowConfig(event_window_s=4.0))
    wav = _noise(9.0, seed=3)
    coarse = embed(model, wav, sample_rate=SR)
    fine = embed(model, wav, sample_rate=SR, hop=0.2)
    # windows of 201, 201 and 50 mel frames: 5 steps x 4 passes, 5 x 4, then (50 - 40) // 10 + 1
    assert coarse.frame.shape[0] == 11 and fine.frame.shape[0] == 20 + 20 + 2
    np.testing.assert_allclose(fine.frame_times, 0.39 + 0.2 * np.arange(42), atol=1e-5, rtol=0)
    assert np.array_equal(fine.frame[::4], coarse.frame)  # every 4th frame: the 0.8 s output, bit for bit
    assert np.isfinite(fine.frame).all()
    # frame 4 j + p of the first window: step j of a plain forward on the first window's log-mel continued by
    # p k frames into the second window (its samples), normalised with the first window's mean and std
    pre = (wav[1:] - np.float32(0.97) * wav[:-1]).astype(np.float32)
    no_pre = dataclasses.replace(model.config.frontend, preemphasis=0.0)
    base = log_mel(pre[:96000], config=no_pre, normalize=False)
    ext = log_mel(pre[:96000 + 3 * 10 * 480 + 1024], config=no_pre, normalize=False)
    mel = (ext - base.mean(-1, keepdim=True)) / base.std(-1, keepdim=True).clamp_min(model.config.frontend.std_floor)
    own = (ext - ext.mean(-1, keepdim=True)) / ext.std(-1, keepdim=True)  # (what the test must tell apart)
    for p in (1, 3):
        ref = _passes(model, mel.unsqueeze(0)[..., :p * 10 + 201], p * 10, tasks=("embeddings",))
        # the library batches the equal-length passes of both windows together: float rounding only (~1e-8)
        np.testing.assert_allclose(fine.frame[p:20:4], ref.frame_embeddings[0, :5].numpy(), atol=1e-6, rtol=0)
        wrong = _passes(model, own.unsqueeze(0)[..., :p * 10 + 201], p * 10, tasks=("embeddings",))
        assert np.abs(fine.frame[p:20:4] - wrong.frame_embeddings[0, :5].numpy()).max() > 1e-4
    # the last window has nothing to continue into: its passes drop frames from its own log-mel
    last = _features(model, wav[8 * SR:])[0]  # pre[n] = wav[n + 1] - 0.97 wav[n]: the window pre[192000:]
    assert np.array_equal(fine.frame[41], _passes(model, last, 10, tasks=("embeddings",)).frame_embeddings[0, 0])


def test_hop_streamed_and_batched_inputs(v3_model):
    """Long inputs are decoded window by window (forced here from 1 s); equal-length inputs share batches: the
    shifted passes must still land in their own input and window."""
    model = copy.copy(v3_model)
    model.config = v3_model.config.replace(windows=WindowConfig(event_window_s=4.0))
    a, b = _noise(7.5, seed=11), _noise(7.5, seed=12)
    alone = [embed(model, x, sample_rate=SR, hop=0.4, workers=0) for x in (a, b)]
    together = embed(model, [a, b], sample_rate=SR, hop=0.4, batch_size=64)
    # batch_size=1: every window runs as soon as it is cut, so a job must know its shifted passes beforehand
    streamed = [embed(model, x, sample_rate=SR, hop=0.4, workers=0, batch_size=1, stream_threshold_s=1.0)
                for x in (a, b)]
    for ref, x, y in zip(alone, together, streamed):
        assert ref.frame.shape == x.frame.shape == y.frame.shape == (10 + 7, 512)  # 201 mel frames: 5 steps x 2 passes; the last 175: (F - 40) // 20 + 1
        np.testing.assert_allclose(x.frame, ref.frame, atol=1e-6, rtol=0)  # other batch composition: rounding only
        assert np.array_equal(y.frame, ref.frame) and np.array_equal(y.frame_times, ref.frame_times)
    assert not np.allclose(together[0].frame, together[1].frame, atol=1e-3)


def test_short_input_gives_one_frame_at_any_hop(v3_model):
    wav = _noise(0.5, seed=4)
    coarse = embed(v3_model, wav, sample_rate=SR)
    fine = embed(v3_model, wav, sample_rate=SR, hop=0.1)
    assert fine.frame.shape == (1, 512) and np.array_equal(fine.frame, coarse.frame)


@pytest.mark.parametrize("bad", [0.05, 0.03, 0.0, -0.1, 1.6, 0.7, float("nan"), "0.1", True])
def test_invalid_hop_is_refused_naming_the_allowed_values(v3_model, bad):
    with pytest.raises(ValueError, match=r"0\.02, 0\.04, 0\.08, 0\.1, 0\.16, 0\.2, 0\.4, 0\.8"):
        embed(v3_model, _noise(1.0), sample_rate=SR, hop=bad)


def test_nearest_centre_rule_is_the_authors_repetition_at_0_8():
    steps = 2 * np.arange(6) * 40 + 39  # step centres in half mel frames
    grid = (2 * np.arange(48) + 1) * 5  # 100 ms grid frames
    assert np.array_equal(nearest(steps, grid), np.repeat(np.arange(6), 8))
    assert np.array_equal(nearest(np.array([10, 20]), np.array([0, 14, 15, 16, 30])), [0, 0, 0, 1, 1])


def test_predict_hop_scores_from_shifted_passes(v3_model):
    wav = _noise(3.3, seed=5)
    mel, frames = _features(v3_model, wav)
    coarse = predict(v3_model, wav, sample_rate=SR)
    assert np.array_equal(predict(v3_model, wav, sample_rate=SR, hop=0.8).event_probs, coarse.event_probs)
    fine = predict(v3_model, wav, sample_rate=SR, hop=0.1)
    assert fine.event_probs.shape == coarse.event_probs.shape and fine.event_hop_s == pytest.approx(0.1)
    # scenes and tags are computed once, as before
    assert np.array_equal(fine.scene_probs, coarse.scene_probs) and np.array_equal(fine.tag_probs, coarse.tag_probs)
    # step i (centre 0.39 + 0.1 i) is step j of the pass shifted by (i mod 8) * 5 frames
    steps = np.empty(((frames - 40) // 5 + 1, 14), np.float32)
    for p in range(8):
        ev = _passes(v3_model, mel, 5 * p, tasks=("events",)).event_probs[0, ::8].numpy()
        steps[p::8] = ev[:len(range(p, steps.shape[0], 8))]
    # 100 ms frame t (centre 0.1 t + 0.05) takes the nearest step centre: step t - 3, clipped
    idx = np.clip(np.arange(fine.event_probs.shape[0]) - 3, 0, steps.shape[0] - 1)
    assert np.array_equal(fine.event_probs, steps[idx])
    assert not np.array_equal(fine.event_probs, coarse.event_probs)
    # under 0.1 s the grid follows the hop
    finest = predict(v3_model, wav, sample_rate=SR, hop=0.04)
    assert finest.event_hop_s == pytest.approx(0.04)
    assert finest.event_probs.shape == (coarse.event_probs.shape[0] * 10 // 4, 14)
    np.testing.assert_allclose(np.diff(finest.event_times), 0.04, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# layer and pooling
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(v3_model):
    return {"v1": build_model("v1", seed=0).eval(), "v2": build_model("v2", seed=0).eval(), "v3": v3_model}


@pytest.mark.parametrize("arch", ["v1", "v2", "v3"])
def test_every_layer_and_pooling_has_the_documented_shape(models, arch):
    model = models[arch]
    wav = _noise(6.0, seed=6)  # 7 steps of 0.8 s; two 5 s scene crops (0 s and 1 s, the last aligned to the end)
    mel, frames = _features(model, wav)
    ref = _passes(model, mel, 0, tasks=("embeddings", "scene"), conv_embeddings=True)
    sizes = {"gru": 512, "conv": 512, "scene": 128}
    outs = {}
    for layer in ("gru", "conv", "scene"):
        for pooling in ("mean", "max", "mean+max"):
            emb = embed(model, wav, sample_rate=SR, layer=layer, pooling=pooling)
            size = embedding_size(model, layer=layer, pooling=pooling)
            d = sizes[layer]
            assert size == (d, 2 * d if pooling == "mean+max" else d)
            t = 2 if layer == "scene" else 7
            assert emb.frame.shape == (t, size.frame) and emb.clip.shape == (size.clip,)
            assert emb.frame_times.shape == (t,) and emb.layer == layer and emb.pooling == pooling
            assert np.isfinite(emb.frame).all() and np.isfinite(emb.clip).all()
            pooled = {"mean": emb.frame.mean(0), "max": emb.frame.max(0),
                      "mean+max": np.concatenate([emb.frame.mean(0), emb.frame.max(0)])}[pooling]
            np.testing.assert_allclose(emb.clip, pooled, atol=1e-6, rtol=0)
            outs[layer] = emb
    np.testing.assert_array_equal(outs["gru"].frame, ref.frame_embeddings[0, :7].numpy())
    np.testing.assert_array_equal(outs["conv"].frame, ref.conv_embeddings[0, :7].numpy())
    assert not np.allclose(outs["gru"].frame, outs["conv"].frame)
    np.testing.assert_allclose(outs["scene"].frame_times, [2.5, 3.5], atol=1e-4)
    # the scene codes: plain forwards on the first and the last 5 s, each normalised on its own. embed runs the two
    # crops in one batch, and oneDNN picks other convolution kernels for a batch on some CPUs (AMD EPYC: up to 4
    # float32 ulps at |x| ~ 0.3), so equal within 3e-7; the two crops' codes differ by ~1e-5 even with random weights
    # and would fail it.
    pre = (wav[1:] - np.float32(0.97) * wav[:-1]).astype(np.float32)
    for row, crop_samples in enumerate((pre[:120000], pre[-120000:])):
        crop, _ = W.features(crop_samples, frontend=model.config.frontend, min_frames=40)
        code = inference_runner(model)(crop.unsqueeze(1), tasks=("scene",)).scene_embeddings[0].numpy()
        np.testing.assert_allclose(outs["scene"].frame[row], code, atol=3e-7, rtol=0)
    assert not np.array_equal(outs["scene"].frame[0], outs["scene"].frame[1])


def test_conv_layer_with_finer_hop(v3_model):
    wav = _noise(2.0, seed=7)
    coarse = embed(v3_model, wav, sample_rate=SR, layer="conv")
    fine = embed(v3_model, wav, sample_rate=SR, layer="conv", hop=0.2)
    assert np.array_equal(fine.frame[::4], coarse.frame) and fine.frame.shape[1] == 512


def test_conv_embeddings_only_when_asked_and_not_from_onnxruntime(v3_model):
    mel = torch.randn(1, 1, 128, 120, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = v3_model(mel)
        asked = v3_model(mel, tasks=("embeddings",), conv_embeddings=True)
    assert plain.conv_embeddings is None and "conv_embeddings" not in plain.to_dict()  # default fields unchanged
    assert asked.conv_embeddings.shape == (1, 3, 512)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ort = inference_runner(v3_model, backend="onnxruntime")
    wav = _noise(1.0)
    with pytest.raises(ValueError, match="torch backend"):
        embed(ort, wav, sample_rate=SR, layer="conv")
    np.testing.assert_allclose(embed(ort, wav, sample_rate=SR, hop=0.4).frame,
                               embed(v3_model, wav, sample_rate=SR, hop=0.4).frame, atol=1e-4, rtol=0)


def test_bad_layer_pooling_and_scene_hop_are_refused(v3_model):
    wav = _noise(1.0)
    with pytest.raises(ValueError, match="'gru', 'conv', 'scene'"):
        embed(v3_model, wav, sample_rate=SR, layer="fc")
    with pytest.raises(ValueError, match="'mean', 'max', 'mean\\+max'"):
        embed(v3_model, wav, sample_rate=SR, pooling="median")
    with pytest.raises(ValueError, match="layer='scene'"):
        embed(v3_model, wav, sample_rate=SR, layer="scene", hop=0.1)
    with pytest.raises(ValueError, match="'gru', 'conv', 'scene'"):
        embedding_size(v3_model, layer="attention")


def test_npz_says_what_it_holds(v3_model, tmp_path):
    emb = embed(v3_model, _noise(2.0), sample_rate=SR, hop=0.1, layer="conv", pooling="mean+max")
    path = emb.save(tmp_path / "e.npz")
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        assert z["frame"].shape == emb.frame.shape == (emb.frame.shape[0], 512) and z["clip"].shape == (1024,)
    assert meta["layer"] == "conv" and meta["pooling"] == "mean+max" and meta["hop_s"] == pytest.approx(0.1)
    assert meta["frame_size"] == 512 and meta["clip_size"] == 1024
    back = Embeddings.load(path)
    assert back.layer == "conv" and back.pooling == "mean+max" and back.clip.shape == (1024,)
    assert np.array_equal(back.frame, emb.frame)


def test_cli_embed_and_predict_options(tmp_path, authors_checkpoint, v3_model, capsys):
    import soundfile as sf

    from dcasenet_hub.cli import main

    wav = _noise(2.0, seed=8)
    src = tmp_path / "in" / "a.wav"
    src.parent.mkdir()
    sf.write(src, wav, SR, subtype="FLOAT")
    out = tmp_path / "out"
    rc = main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet", "--hop", "0.1",
               "--layer", "conv", "--pooling", "max"])
    assert rc == 0
    with np.load(out / "a.npz") as z:
        meta = json.loads(str(z["meta"]))
        frame, clip = z["frame"], z["clip"]
    assert meta["layer"] == "conv" and meta["pooling"] == "max" and meta["hop_s"] == pytest.approx(0.1)
    api = embed(v3_model, src, hop=0.1, layer="conv", pooling="max")
    assert np.array_equal(frame, api.frame) and np.array_equal(clip, api.clip)
    # a rerun with other options is not "already complete"
    rc = main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint)])
    assert rc == 0 and "1 done" in capsys.readouterr().err
    with np.load(out / "a.npz") as z:
        assert z["frame"].shape == api.frame[::8].shape
    # a file written before these options (no pooling / hop in its meta) still counts as complete for a default rerun
    with np.load(out / "a.npz") as z:
        arrays = {k: z[k] for k in z.files}
    old = {k: v for k, v in json.loads(str(arrays["meta"])).items() if k not in ("pooling", "hop", "frame_size",
                                                                                   "clip_size")}
    np.savez(out / "a.npz", **{**arrays, "meta": np.array(json.dumps(old, sort_keys=True))})
    rc = main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint)])
    assert rc == 0 and "1 already complete" in capsys.readouterr().err
    rc = main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--pooling", "max"])
    assert rc == 0 and "1 done" in capsys.readouterr().err
    rc = main(["predict", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet", "--hop", "0.04"])
    assert rc == 0
    d = json.loads((out / "a.json").read_text())
    assert d["events"]["hop_s"] == pytest.approx(0.04) and d["meta"]["hop"] == pytest.approx(0.04)
    for bad in (["--hop", "0.05"], ["--hop", "0.1", "--layer", "scene"]):
        rc = main(["embed", str(src), "-o", str(out), "--model", str(authors_checkpoint), "--quiet", *bad])
        assert rc == 2
        assert "--hop" in capsys.readouterr().err
