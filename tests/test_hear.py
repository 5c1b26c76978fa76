"""The HEAR 2021 API (dcasenet_hub.hear), checked as hear-validator does, and torch.hub entry points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcasenet_hub import hear
from dcasenet_hub.inference.pipeline import embed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hear_model(authors_checkpoint):
    return hear.load_model(str(authors_checkpoint))


def test_attributes(hear_model):
    assert isinstance(hear_model, torch.nn.Module)
    assert hear_model.sample_rate in (16000, 22050, 44100, 48000)  # the rates HEAR accepts
    assert isinstance(hear_model.scene_embedding_size, int) and hear_model.scene_embedding_size == 512
    assert isinstance(hear_model.timestamp_embedding_size, int) and hear_model.timestamp_embedding_size == 512


def test_default_timestamp_hop_is_within_hears_suggestion(hear_model):
    assert hear_model.hop_s == hear.TIMESTAMP_HOP_S == pytest.approx(0.04)
    assert hear_model.hop_s <= 0.05  # hear-validator warns above 50 ms


@pytest.mark.parametrize("length", [1.07, 1.98, 4.0])
def test_timestamp_embeddings_as_hear_validator(hear_model, length):
    audio = torch.rand(2, int(length * hear_model.sample_rate), generator=torch.Generator().manual_seed(0)) * 2 - 1
    emb, ts = hear.get_timestamp_embeddings(audio, hear_model)
    assert emb.dtype == torch.float32 and emb.ndim == 3 and emb.shape[0] == 2 and emb.shape[2] == 512
    assert ts.shape == emb.shape[:2] and ts.dtype == torch.float32
    frames = 1 + (int(length * 24000) - 1) // 480
    k = round(hear_model.hop_s * 50)  # hop in 20 ms mel frames
    steps = (frames - 40) // k + 1
    assert emb.shape[1] == steps
    assert np.abs(np.diff(ts.numpy()) - 1000 * hear_model.hop_s).max() < 1e-2  # regular, in milliseconds
    np.testing.assert_allclose(ts[0].numpy(), 390.0 + 1000 * hear_model.hop_s * np.arange(steps), atol=1e-2)
    assert torch.equal(ts[0], ts[1])  # equal-length sounds, equal timestamps
    assert ts.min() >= 0 and ts.max() <= 1000 * length
    assert torch.isfinite(emb).all()
    # equals the library's embed at HEAR's rate and hop
    ref = embed(hear_model.model, audio[1].numpy(), sample_rate=hear_model.sample_rate, hop=hear_model.hop_s)
    np.testing.assert_allclose(emb[1].numpy(), ref.frame, atol=1e-6)
    np.testing.assert_allclose(ts[1].numpy(), ref.frame_times * 1000, atol=1e-2)
    # every 20th timestamp is the network's own 0.8 s step at the same centre
    coarse = embed(hear_model.model, audio[1].numpy(), sample_rate=hear_model.sample_rate)
    np.testing.assert_allclose(emb[1, ::20].numpy(), coarse.frame, atol=1e-6)
    np.testing.assert_allclose(ts[1, ::20].numpy(), coarse.frame_times * 1000, atol=1e-2)


def test_timestamps_stay_regular_across_the_library_windows(v3_model):
    """embed() cuts 60 s windows (4 s here); the fine grid runs on across their boundaries (HEAR needs <= 1 ms)."""
    import copy

    from dcasenet_hub.config import WindowConfig

    model = copy.copy(v3_model)
    model.config = v3_model.config.replace(windows=WindowConfig(event_window_s=4.0))
    wrapped = hear.HearModel(model, hop=0.2)
    audio = torch.rand(2, int(9.0 * wrapped.sample_rate), generator=torch.Generator().manual_seed(3)) * 2 - 1
    emb, ts = hear.get_timestamp_embeddings(audio, wrapped)
    frames_last = 1 + (1 * 24000 - 2) // 480  # the last window: 1 s less the pre-emphasis sample
    assert emb.shape == (2, 20 + 20 + (frames_last - 40) // 10 + 1, 512)  # 5 steps x 4 passes per 4 s window
    np.testing.assert_allclose(np.diff(ts.numpy()), 200.0, atol=1e-2)  # no gap at 4 s or 8 s
    lib = embed(model, audio[0].numpy(), sample_rate=wrapped.sample_rate, hop=0.2)
    np.testing.assert_allclose(emb[0].numpy(), lib.frame, atol=1e-6, rtol=0)


def test_hop_0_8_gives_the_networks_step_and_bad_hops_are_refused(authors_checkpoint):
    model = hear.load_model(str(authors_checkpoint), hop=0.8)
    audio = torch.rand(1, int(2.5 * model.sample_rate), generator=torch.Generator().manual_seed(2)) * 2 - 1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (1, 3, 512)
    np.testing.assert_allclose(ts[0].numpy(), [390.0, 1190.0, 1990.0], atol=1e-2)
    with pytest.raises(ValueError, match="0.02, 0.04"):
        hear.load_model(str(authors_checkpoint), hop=0.05)


def test_scene_embeddings_are_mean_of_the_0_8_s_timestamp_embeddings(hear_model):
    audio = torch.rand(4, int(2.74 * hear_model.sample_rate), generator=torch.Generator().manual_seed(1)) * 2 - 1
    scene = hear.get_scene_embeddings(audio, hear_model)
    assert scene.shape == (4, 512) and scene.dtype == torch.float32
    emb, _ = hear.get_timestamp_embeddings(audio, hear_model)
    steps = emb[:, ::round(0.8 / hear_model.hop_s)]  # the 0.8 s steps: the scene embedding does not vary with hop
    assert steps.shape[1] == 3
    torch.testing.assert_close(scene, steps.mean(dim=1), atol=1e-5, rtol=0)
    assert not torch.allclose(scene[0], scene[1])  # different sounds, different embeddings


def test_load_model_default_is_dcasenet_v3(monkeypatch, v3_model):
    from dcasenet_hub.hub import api as hub

    asked = []
    monkeypatch.setattr(hub, "load_pretrained", lambda cls, name, **kw: asked.append(name) or v3_model)
    model = hear.load_model()
    assert asked == ["dcasenet-v3"] and model.model is v3_model


def test_torch_hub_entry_points(authors_checkpoint, v3_state_dict):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert "torch" in hubconf.dependencies
    assert all(callable(getattr(hubconf, n)) for n in ("dcasenet_v1", "dcasenet_v2", "dcasenet_v3"))
    model = torch.hub.load(str(REPO), "dcasenet_v3", source="local", pretrained=False, seed=0)
    assert model.arch == "v3" and model.num_parameters() > 0
    loaded = torch.hub.load(str(REPO), "dcasenet_v3", source="local", weights=str(authors_checkpoint))
    for k, v in v3_state_dict.items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    v2 = torch.hub.load(str(REPO), "dcasenet_v2", source="local", pretrained=False)
    assert v2.arch == "v2"


def test_numpy_arrays_are_accepted_as_tensors_are(hear_model):
    """Users pass numpy arrays too: the same embeddings as for the tensor, returned as CPU tensors."""
    audio = (torch.rand(2, hear_model.sample_rate, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    from_numpy = hear.get_scene_embeddings(audio.numpy(), hear_model)
    assert isinstance(from_numpy, torch.Tensor) and from_numpy.shape == (2, 512)
    torch.testing.assert_close(from_numpy, hear.get_scene_embeddings(audio, hear_model), rtol=0, atol=0)
    coarse = hear.HearModel(hear_model.model, hop=0.8)
    emb, ts = hear.get_timestamp_embeddings(audio.numpy(), coarse)
    ref_emb, ref_ts = hear.get_timestamp_embeddings(audio, coarse)
    torch.testing.assert_close(emb, ref_emb, rtol=0, atol=0)
    torch.testing.assert_close(ts, ref_ts, rtol=0, atol=0)
    with pytest.raises(TypeError, match="numpy array"):
        hear.get_scene_embeddings([[0.0] * 100], hear_model)


def test_the_cost_of_timestamp_embeddings_is_stated():
    """The default 40 ms hop costs 20 passes: the module and README say so before a user waits for it."""
    import dcasenet_hub.integrations.hear as impl

    assert "20 network passes" in hear.get_timestamp_embeddings.__doc__.replace("\n    ", " ")
    assert "20" in impl.__doc__
    readme = (REPO / "README.md").read_text()
    assert "hear" in readme.lower() and "20 passes" in readme


def test_input_shapes_the_api_cannot_take_are_refused_naming_the_shape(hear_model):
    for audio, said in ((torch.zeros(48000), r"\(n_sounds, n_samples\), got shape \(48000,\)"),
                        (torch.zeros(0, 48000), r"no sounds \(shape \(0, 48000\)\); pass at least one")):
        for call in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
            with pytest.raises(ValueError, match=said):
                call(audio, hear_model)
