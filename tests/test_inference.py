"""inference.embed / predict: shapes, timestamps, the authors' 3-crop TTA, windowing, short and bad inputs."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch

from dcasenet_hub import audio as W
from dcasenet_hub.audio import AudioLoadError, log_mel, normalize, resample
from dcasenet_hub.audio import resampling as resample_module
from dcasenet_hub.config import WindowConfig
from dcasenet_hub.inference import pipeline as inference
from dcasenet_hub.inference.pipeline import detect_events, embed, predict

SR = 24000


def _noise(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.4)
    return x.astype(np.float32)


def _authors_crop_probs(model, wav24: np.ndarray, starts: list[int | None], length: int = 120000) -> np.ndarray:
    """The authors' ASC test path written out: pre-emphasis of the whole signal, crops, log-mel, MVN per crop."""
    fe = model.config.frontend
    pre = wav24[1:] - 0.97 * wav24[:-1]
    no_pre = dataclasses.replace(fe, preemphasis=0.0)
    crops = [pre[s:s + length] if s is not None else pre[-length:] for s in starts]
    mels = torch.stack([log_mel(torch.from_numpy(np.ascontiguousarray(c)), config=no_pre) for c in crops])
    assert mels.shape[-1] == 251
    with torch.no_grad():
        logits = model(mels.unsqueeze(1), tasks=("scene",)).scene_logits
    return torch.softmax(logits, -1).numpy()


def _forward(model, mel: torch.Tensor, tasks):
    with torch.no_grad():
        return model(mel.unsqueeze(0).unsqueeze(0), tasks=tasks)


# ----------------------------------------------------------------------------------------------------------------
# The authors' 3-crop test-time averaging
# ----------------------------------------------------------------------------------------------------------------


def test_scene_probs_equal_authors_three_crop_tta_at_24k(v3_model):
    wav = _noise(10.0, seed=1)
    expected = _authors_crop_probs(v3_model, wav, [0, 60000, None]).mean(0)
    pred = predict(v3_model, wav, sample_rate=SR)
    np.testing.assert_allclose(pred.scene_probs, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred.scene_window_starts, [0.0, 2.5, 119999 / SR], atol=1e-6)
    assert pred.top_scene == v3_model.config.scene_labels[int(expected.argmax())]


def test_scene_probs_equal_authors_three_crop_tta_from_44k_file(v3_model, tmp_path):
    import soundfile as sf

    wav44 = _noise(10.0, sr=44100, seed=2)
    path = tmp_path / "clip.wav"
    sf.write(path, wav44, 44100, subtype="FLOAT")
    wav24 = resample(wav44, 44100, SR)  # whole-signal resampling, then pre-emphasis, as the authors
    assert wav24.shape == (240000,)
    expected = _authors_crop_probs(v3_model, wav24, [0, 60000, None]).mean(0)
    np.testing.assert_allclose(predict(v3_model, path).scene_probs, expected, atol=1e-5, rtol=0)


def test_scene_starts_rule():
    assert W.scene_starts(239999, 120000, 60000) == [0, 60000, 119999]
    assert W.scene_starts(240000, 120000, 60000) == [0, 60000, 120000]
    assert W.scene_starts(100000, 120000, 60000) == [0]
    assert W.scene_starts(300000, 120000, 60000) == [0, 60000, 120000, 180000]
    assert W.scene_starts(300001, 120000, 60000) == [0, 60000, 120000, 180000, 180001]


# ----------------------------------------------------------------------------------------------------------------
# Shapes, timestamps, windows
# ----------------------------------------------------------------------------------------------------------------


def test_embed_shapes_times_and_clip_is_network_clip_embedding(v3_model):
    wav = _noise(10.0)
    emb = embed(v3_model, wav, sample_rate=SR)
    assert emb.frame.shape == (12, 512) and emb.frame.dtype == np.float32
    np.testing.assert_allclose(emb.frame_times, 0.39 + 0.8 * np.arange(12), atol=1e-5)
    assert emb.clip.shape == (512,) and emb.hop_s == pytest.approx(0.8) and emb.duration_s == pytest.approx(10.0)
    # up to 60 s: one window = the whole pre-emphasised signal, normalised as a whole
    mel = log_mel(wav, config=v3_model.config.frontend)
    out = _forward(v3_model, mel, ("embeddings",))
    np.testing.assert_allclose(emb.frame, out.frame_embeddings[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(emb.clip, out.clip_embeddings[0].numpy(), atol=1e-5)


def test_predict_shapes_labels_and_events_consistent(v3_model):
    wav = _noise(7.3)
    pred = predict(v3_model, wav, sample_rate=SR, threshold=0.5)
    cfg = v3_model.config
    assert pred.scene_probs.shape == (10,) and pred.scene_probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert pred.tag_probs.shape == (80,) and ((pred.tag_probs > 0) & (pred.tag_probs < 1)).all()
    steps = (1 + (int(7.3 * SR) - 1) // 480) // 40
    assert pred.event_probs.shape == (steps * 8, 14)
    np.testing.assert_allclose(pred.event_times, 0.1 * np.arange(steps * 8), atol=1e-6)
    assert pred.scene_labels == cfg.scene_labels and pred.event_labels == cfg.event_labels
    assert pred.top_scene in cfg.scene_labels
    assert pred.events == detect_events(pred.event_probs, cfg.event_labels, hop_s=0.1, threshold=0.5,
                                        duration_s=7.3)
    d = pred.to_dict()
    assert d["scene"]["top"] == pred.top_scene and set(d["tags"]["probs"]) == set(cfg.tag_labels)
    # tags/events come from the whole clip normalised as a whole (the authors' tagging evaluation)
    out = _forward(v3_model, log_mel(wav, config=cfg.frontend), ("tags", "events"))
    np.testing.assert_allclose(pred.tag_probs, torch.sigmoid(out.tag_logits[0]).numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.event_probs, out.event_probs[0].numpy(), atol=1e-5)


def test_event_windows_concatenate_on_the_output_grid(v3_model):
    """Windows are cut at multiples of 0.8 s, normalised on their own and concatenated (4 s windows here)."""
    model = copy.copy(v3_model)
    model.config = v3_model.config.replace(windows=WindowConfig(event_window_s=4.0))
    wav = _noise(10.0, seed=3)
    emb = embed(model, wav, sample_rate=SR)
    pred = predict(model, wav, sample_rate=SR)
    pre = wav[1:] - np.float32(0.97) * wav[:-1]
    no_pre = dataclasses.replace(model.config.frontend, preemphasis=0.0)
    frames, events, tags, weights = [], [], [], []
    for start in range(0, pre.size, 96000):
        seg = np.ascontiguousarray(pre[start:start + 96000])
        out = _forward(model, log_mel(seg, config=no_pre), ("embeddings", "events", "tags"))
        frames.append(out.frame_embeddings[0].numpy())
        events.append(out.event_probs[0].numpy())
        tags.append(torch.sigmoid(out.tag_logits[0]).numpy())
        weights.append(seg.size)
    np.testing.assert_allclose(emb.frame, np.concatenate(frames), atol=1e-5)
    assert emb.frame.shape[0] == 12
    np.testing.assert_allclose(np.diff(emb.frame_times), 0.8, atol=1e-5)
    np.testing.assert_allclose(pred.event_probs, np.concatenate(events), atol=1e-5)
    np.testing.assert_allclose(pred.tag_probs, np.average(tags, axis=0, weights=weights), atol=1e-5)
    np.testing.assert_allclose(pred.tag_window_probs, np.stack(tags), atol=1e-5)
    np.testing.assert_allclose(pred.tag_window_starts, [0.0, 4.0, 8.0], atol=1e-6)


def test_list_input_keeps_order_and_equals_single_calls(v3_model):
    wavs = [_noise(3.0, seed=s) for s in range(3)] + [_noise(10.0, seed=9)]
    batch = embed(v3_model, wavs, sample_rate=SR, batch_size=4, workers=2)
    assert isinstance(batch, list) and len(batch) == 4
    for w, e in zip(wavs, batch):
        single = embed(v3_model, w, sample_rate=SR, workers=0)
        np.testing.assert_allclose(e.frame, single.frame, atol=1e-5)
        assert e.duration_s == pytest.approx(w.size / SR)


def test_torch_multichannel_input_is_channel_mean(v3_model):
    rng = np.random.default_rng(4)
    stereo = (0.1 * rng.standard_normal((2, SR * 2))).astype(np.float32)
    a = embed(v3_model, torch.from_numpy(stereo), sample_rate=SR)
    b = embed(v3_model, stereo.mean(0), sample_rate=SR)
    np.testing.assert_allclose(a.frame, b.frame, atol=1e-6)


def test_model_mode_restored(v3_model):
    model = copy.deepcopy(v3_model).train()
    embed(model, _noise(1.0), sample_rate=SR)
    assert model.training
    # eval-mode forward regardless of the model's mode: equal to the eval model's output
    np.testing.assert_allclose(embed(model, _noise(1.0), sample_rate=SR).frame,
                               embed(v3_model, _noise(1.0), sample_rate=SR).frame, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Short, silent and bad inputs
# ----------------------------------------------------------------------------------------------------------------


def test_short_input_is_tiled_as_the_authors_and_trimmed(v3_model):
    wav = _noise(0.5)
    pred = predict(v3_model, wav, sample_rate=SR)
    emb = embed(v3_model, wav, sample_rate=SR)
    assert pred.event_probs.shape == (5, 14)  # 0.5 s -> five 100 ms frames
    assert emb.frame.shape == (1, 512) and 0 < emb.frame_times[0] <= 0.5
    # by hand: 25 frames -> doubled to 50, normalised after tiling
    logmel = log_mel(wav, config=v3_model.config.frontend, normalize=False)
    assert logmel.shape[-1] == 25
    tiled = normalize(torch.cat([logmel, logmel], -1))
    out = _forward(v3_model, tiled, ("tags", "embeddings"))
    np.testing.assert_allclose(pred.tag_probs, torch.sigmoid(out.tag_logits[0]).numpy(), atol=1e-5)
    np.testing.assert_allclose(emb.frame[0], out.frame_embeddings[0, 0].numpy(), atol=1e-5)


def test_digital_silence_and_minimum_length(v3_model):
    for seconds, n_events in ((0.1, 1), (2.0, 16)):
        pred = predict(v3_model, np.zeros(int(seconds * SR), np.float32), sample_rate=SR)
        assert np.isfinite(pred.scene_probs).all() and np.isfinite(pred.event_probs).all()
        assert np.isfinite(pred.tag_probs).all()
        assert pred.event_probs.shape == (n_events, 14)
    with pytest.raises(ValueError, match="too short"):
        embed(v3_model, np.zeros(int(0.05 * SR), np.float32), sample_rate=SR)


def test_bad_waveforms_raise_clear_errors(v3_model):
    x = _noise(1.0)
    x[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        embed(v3_model, x, sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate"):
        embed(v3_model, _noise(1.0))
    with pytest.raises(AudioLoadError, match="file not found"):
        predict(v3_model, "/nonexistent/file.wav")


def test_iterate_reports_bad_inputs_and_keeps_going(v3_model, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    results = list(inference.iterate(v3_model, [str(bad), _noise(1.0)], sample_rate=SR, predictions=True))
    by_index = {r.index: r for r in results}
    assert not by_index[0].ok and "not a readable audio file" in str(by_index[0].error)
    assert by_index[1].ok and by_index[1].embeddings is not None and by_index[1].prediction is not None


@pytest.mark.parametrize("sr,channels,subtype", [(8000, 1, "PCM_U8"), (192000, 8, "PCM_24"), (44100, 2, "PCM_16"),
                                                 (22050, 3, "FLOAT")])
def test_files_of_any_rate_channels_and_depth(v3_model, tmp_path, sr, channels, subtype):
    import soundfile as sf

    rng = np.random.default_rng(sr)
    data = (0.2 * rng.standard_normal((int(1.5 * sr), channels))).clip(-1, 1)
    path = tmp_path / f"x{sr}.wav"
    sf.write(path, data, sr, subtype=subtype)
    emb = embed(v3_model, path)
    read, _ = sf.read(path, dtype="float32", always_2d=True)
    ref = embed(v3_model, resample(read.mean(1), sr, SR), sample_rate=SR)
    np.testing.assert_allclose(emb.frame, ref.frame, atol=1e-5)
    assert emb.sample_rate == sr and emb.duration_s == pytest.approx(1.5, abs=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# Streaming pieces
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig", [44100, 8000, 192000, 22050, 16000])
def test_chunked_resampling_matches_whole_signal(orig):
    x = _noise(3.3, sr=orig, seed=orig)
    reader = W.ArrayReader(x, orig, "x")
    chunked = np.concatenate(list(W.resampled_blocks(reader, SR, chunk_s=0.37)))
    whole = resample(x, orig, SR)
    assert chunked.shape == whole.shape == (W.resampled_length(x.size, orig, SR),)
    assert np.abs(chunked - whole).max() < 1e-6


def test_preemphasis_and_cut_across_blocks():
    x = _noise(2.0)
    blocks = [x[:1000], x[1000:1001], x[1001:30000], x[30000:]]
    pre = np.concatenate(list(W.preemphasised_blocks(iter(blocks), 0.97)))
    np.testing.assert_allclose(pre, x[1:] - np.float32(0.97) * x[:-1], atol=1e-7)
    plan = W.plan(pre.size, sample_rate=SR, windows=WindowConfig(scene_window_s=0.5, scene_hop_s=0.25,
                                                                 event_window_s=0.8),
                  kinds=frozenset({W.SCENE, W.EVENT}))
    chunks = [pre[i:i + 7000] for i in range(0, pre.size, 7000)]
    got = list(W.cut(iter(chunks), plan))
    assert len(got) == len(plan)
    for w, samples in got:
        np.testing.assert_array_equal(samples, pre[w.start:w.stop])


def test_streamed_file_equals_in_memory_result(v3_model, tmp_path, monkeypatch):
    import soundfile as sf

    wav44 = _noise(8.0, sr=44100, seed=5)
    path = tmp_path / "long.wav"
    sf.write(path, wav44, 44100, subtype="FLOAT")
    ref = predict(v3_model, path)
    monkeypatch.setattr(resample_module, "RESAMPLE_CHUNK_S", 0.9)
    streamed = predict(v3_model, path, progress=True, stream_threshold_s=1.0)
    np.testing.assert_allclose(streamed.scene_probs, ref.scene_probs, atol=1e-5)
    np.testing.assert_allclose(streamed.event_probs, ref.event_probs, atol=1e-5)
    np.testing.assert_allclose(streamed.tag_probs, ref.tag_probs, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Event lists
# ----------------------------------------------------------------------------------------------------------------


def test_detect_events_threshold_median_and_min_duration():
    p = np.zeros((20, 2), np.float32)
    p[2:8, 0] = 0.9
    p[5, 0] = 0.1  # one-frame gap: closed by a 3-frame median filter
    p[12:13, 1] = 0.8  # one-frame blip: removed by the median filter / min_duration
    labels = ["a", "b"]
    assert detect_events(p, labels, hop_s=0.1) == [(0.2, 0.5, "a"), (0.6, 0.8, "a"), (1.2, 1.3, "b")]
    assert detect_events(p, labels, hop_s=0.1, median_filter=0.3) == [(0.2, 0.8, "a")]
    assert detect_events(p, labels, hop_s=0.1, min_duration=0.25) == [(0.2, 0.5, "a")]
    assert detect_events(p, labels, hop_s=0.1, threshold=0.85) == [(0.2, 0.5, "a"), (0.6, 0.8, "a")]
    p[15:20, 1] = 0.9
    assert detect_events(p, labels, hop_s=0.1, duration_s=1.93)[-1] == (1.5, 1.93, "b")


def test_prediction_detect_keeps_the_settings_it_is_not_given_and_checks_the_ones_it_is():
    """detect() gives the prediction's own events: its threshold, per-class thresholds, median filter and minimum
    duration. Values predict refuses are refused here too, and so are class names the prediction does not have.

    Broken variants caught: detect() dropping the median filter and minimum duration (it kept the one-frame blip
    and split the event predict had joined); detect(threshold=2) or class_thresholds={"bb": 0.5} returning a list.
    """
    from dcasenet_hub.errors import OptionsError
    from dcasenet_hub.inference.outputs import Prediction

    p = np.zeros((20, 2), np.float32)
    p[2:8, 0] = 0.9
    p[5, 0] = 0.1
    p[12:13, 1] = 0.8
    labels = ("a", "b")
    settings = {"median_filter": 0.3, "min_duration": 0.25}
    events = detect_events(p, labels, hop_s=0.1, **settings)
    assert events == [(0.2, 0.8, "a")]
    pred = Prediction(np.ones(1, np.float32), np.ones(1, np.float32), p, np.arange(20) * 0.1, events, ("s",),
                      ("t",), labels, duration_s=2.0, **settings)
    assert pred.detect() == events
    assert pred.detect(threshold=0.85) == [(0.2, 0.8, "a")]
    assert pred.detect(median_filter=0, min_duration=0) == detect_events(p, labels, hop_s=0.1)
    assert pred.detect(class_thresholds={"b": 0.85}, median_filter=0, min_duration=0) == [(0.2, 0.5, "a"),
                                                                                           (0.6, 0.8, "a")]
    with pytest.raises(OptionsError, match="threshold=2: must be"):
        pred.detect(threshold=2)
    with pytest.raises(OptionsError, match="median_filter"):
        pred.detect(median_filter=-1)
    with pytest.raises(OptionsError, match="'bb' is not a tag or event class of this prediction .did you mean 'b'"):
        pred.detect(class_thresholds={"bb": 0.5})
    with pytest.raises(ValueError, match="k must be a whole number"):
        pred.top_tags(-1)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_dtype_autocast_and_device_options(v3_model, responsive_v3):
    wav = _noise(2.0, seed=7)
    ref = embed(responsive_v3, wav, sample_rate=SR, device="cpu")
    low = embed(responsive_v3, wav, sample_rate=SR, dtype="bfloat16")
    other = embed(responsive_v3, _noise(2.0, seed=8), sample_rate=SR)  # the broken variant: other audio
    assert low.frame.dtype == np.float32 and low.frame.shape == ref.frame.shape
    # measured: bf16 clip cosine 0.99996 and frame max diff 0.0064; other audio 0.994 and 0.082
    assert _cos(low.clip, ref.clip) > 0.9995 and np.abs(low.frame - ref.frame).max() < 0.02
    assert _cos(other.clip, ref.clip) < 0.9995 and np.abs(other.frame - ref.frame).max() > 0.02
    assert not np.array_equal(low.frame, ref.frame)  # bf16 ran
    with pytest.raises(ValueError, match="dtype"):
        embed(v3_model, wav, sample_rate=SR, dtype="int4")
    with pytest.raises(ValueError, match="batch_size"):
        embed(v3_model, wav, sample_rate=SR, batch_size=0)


# ----------------------------------------------------------------------------------------------------------------
# Short reprs
# ----------------------------------------------------------------------------------------------------------------


def test_prediction_repr_is_one_short_line_with_top_labels():
    from dcasenet_hub.inference.outputs import Prediction

    scene = np.array([0.05, 0.91, 0.04], np.float32)
    tags = np.array([0.1, 0.8, 0.3, 0.55], np.float32)
    pred = Prediction(
        scene_probs=scene, tag_probs=tags, event_probs=np.zeros((100, 2), np.float32),
        event_times=np.arange(100, dtype=np.float32) * 0.1,
        events=[(0.0, 1.0, "dog"), (2.0, 3.0, "car"), (4.0, 4.5, "dog")],
        scene_labels=("park", "street_traffic", "metro"), tag_labels=("Bark", "Traffic_noise", "Speech", "Car"),
        event_labels=("dog", "car"), duration_s=10.0, source="/data/recordings/street.wav",
    )
    assert repr(pred) == ("Prediction(street.wav, 10.0 s, scene=street_traffic 0.91, "
                          "tags=[Traffic_noise 0.80, Car 0.55, Speech 0.30], 3 events)")
    one = dataclasses.replace(pred, events=[(0.0, 1.0, "dog")], untrained_tasks=("events",), source=None)
    assert repr(one) == ("Prediction(?, 10.0 s, scene=street_traffic 0.91, tags=[Traffic_noise 0.80, Car 0.55, "
                         "Speech 0.30], 1 event, untrained: events)")


def test_result_reprs_show_shapes_never_arrays(v3_model):
    wav = _noise(12.0, seed=4)  # (15, 512) frames and (120, 14) event scores: arrays a dataclass repr would print
    emb = embed(v3_model, wav, sample_rate=SR)
    pred = predict(v3_model, wav, sample_rate=SR)
    trained = "" if v3_model.config.trained_tasks else ", untrained weights?"
    assert repr(emb) == (f"Embeddings(<array 0>, 12.0 s, layer=gru, frame={emb.frame.shape} every 0.8 s, "
                         f"clip=(512,) mean{trained})")
    text = repr(pred)
    assert text.startswith(f"Prediction(<array 0>, 12.0 s, scene={pred.top_scene} ")
    assert f"{pred.top_tags(1)[0][0]} {pred.top_tags(1)[0][1]:.2f}" in text
    n = len(pred.events)
    tail = f"{n} event{'' if n == 1 else 's'}"
    if pred.untrained_tasks:
        tail += f", untrained: {', '.join(pred.untrained_tasks)}"
    assert text.endswith(tail + ")")
    for r in (repr(emb), text):
        assert "\n" not in r and "array(" not in r and len(r) < 300


def test_decode_workers_run_torch_on_one_thread_and_the_network_keeps_its_threads(v3_model, monkeypatch):
    """Broken variant caught: the pool without its initializer (workers' STFTs start a second full-width OpenMP
    team that competes with the network's), or a process-wide set_num_threads(1) (the network loses its threads)."""
    # Job.prepare: the thread count inside the decode workers is not visible in any output
    from dcasenet_hub.inference.jobs import Job

    seen: dict[str, int] = {}
    original = Job.prepare

    def recording(self):
        seen[threading.current_thread().name] = torch.get_num_threads()
        return original(self)

    monkeypatch.setattr(Job, "prepare", recording)
    before = torch.get_num_threads()
    embed(v3_model, [_noise(1.0, seed=s) for s in range(3)], sample_rate=SR, workers=2)
    workers = {name: n for name, n in seen.items() if name.startswith("dcasenet-decode")}
    assert workers and set(workers.values()) == {1}
    assert torch.get_num_threads() == before


_COLLECTED_WHILE_A_THREAD_STARTS = """
import gc, threading
import numpy as np
import dcasenet_hub
from dcasenet_hub.inference.pipeline import iterate

clips = [np.random.default_rng(s).standard_normal(48000).astype(np.float32) for s in range(3)]
results = iterate(dcasenet_hub.build_model("v3", seed=0), clips, sample_rate=24000, workers=1)
next(results)
cycle = [results]
cycle.append(cycle)
del results, cycle
# CPython's threading holds this lock while a new thread registers itself, and the collector may run right there
# (the hang was seen so: a thread pool's submit starting a thread while an abandoned generator was collected)
with threading._shutdown_locks_lock:
    gc.collect()
print("collected")
# and one left suspended until the interpreter exits, closed while the modules are torn down
left = iterate(dcasenet_hub.build_model("v3", seed=0), clips, sample_rate=24000, workers=1)
next(left)
"""


def test_an_abandoned_iterate_closed_by_the_collector_or_at_exit_neither_hangs_nor_prints():
    """A generator left unfinished in a reference cycle is closed by the garbage collector, in whatever thread and
    at whatever point the collection happens, including inside threading's own locks; one left unfinished until
    the interpreter exits is closed quietly.

    Broken variants caught: closing waited for the decode threads (``pool.shutdown(wait=True)``), whose join needs
    the lock the collecting thread holds, so the process hung for good; closing at exit used module globals already
    torn down and printed "Exception ignored in: <generator object iterate ...>" with a traceback.
    """
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", _COLLECTED_WHILE_A_THREAD_STARTS], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("closing an abandoned iterate() from the garbage collector hung")
    assert done.returncode == 0 and done.stdout.strip() == "collected", done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]


def _started(work) -> threading.Thread:
    """A new thread running ``work`` (its torch thread count is not fixed until it runs a parallel op)."""
    t = threading.Thread(target=work)
    t.start()
    return t


@pytest.fixture
def restores_torch_threads():
    """The process-wide torch thread count as it was, for the tests after this one."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_decode_workers_leave_torchs_thread_count_to_the_caller_and_to_later_threads(responsive_v3,
                                                                                      restores_torch_threads):
    """torch keeps the last ``set_num_threads`` value process-wide for every thread that has not yet run a parallel
    op, the caller's included. A new thread (its count not fixed yet) sets 3 threads and embeds with decode workers:
    it still has 3 afterwards, and so does a thread started after it.

    Broken variant caught: the workers' ``set_num_threads(1)`` became the count of the calling thread (its first
    parallel op ran after a worker had started) and of every later thread, leaving the network one thread for good.
    """
    seen: list[int] = []

    def caller() -> None:
        torch.set_num_threads(3)
        responsive_v3.embed(_noise(2.0), sample_rate=SR, workers=2)
        seen.append(torch.get_num_threads())

    _started(caller).join(timeout=120)
    _started(lambda: seen.append(torch.get_num_threads())).join(timeout=120)
    assert seen == [3, 3]


def test_a_call_from_a_new_thread_while_another_runs_keeps_the_first_callers_thread_count(responsive_v3,
                                                                                           restores_torch_threads):
    """One thread sets 3 torch threads and starts a call with decode workers (their one thread is then torch's
    process-wide value); while it runs, a new thread makes a call of its own; then the first call ends. The new
    thread's call ran with 3 threads, and a thread started after both has 3.

    Broken variant caught: each call read its caller's count, and a new thread's read gave the workers' 1: its
    network ran on one thread and it set 1 back at its end.
    """
    from dcasenet_hub.inference.pipeline import iterate

    started, second_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        torch.set_num_threads(3)
        results = iterate(responsive_v3, [_noise(1.0, seed=1), _noise(1.0, seed=2)], sample_rate=SR, workers=2)
        next(results)
        started.set()
        second_done.wait(timeout=120)
        list(results)

    def second() -> None:
        responsive_v3.embed(_noise(1.0, seed=3), sample_rate=SR, workers=0)
        seen.append(torch.get_num_threads())

    running = _started(first)
    try:
        assert started.wait(timeout=120)
        _started(second).join(timeout=120)
    finally:
        second_done.set()  # the first call ends now, whatever happened
    running.join(timeout=120)
    _started(lambda: seen.append(torch.get_num_threads())).join(timeout=120)
    assert seen == [3, 3]


def test_a_failed_call_cleans_up_before_it_raises_even_while_its_error_is_kept(responsive_v3):
    """``embed`` of a list with a too-short input raises; the caller keeps the error (a notebook keeps the last
    one). The model's training mode is back at once and the decode threads end, while the error still exists.

    Broken variant caught: the error's traceback held the suspended ``iterate`` generator, whose clean-up waited for
    the error to be freed: threads stayed, and the training mode restored late overwrote what the user set since.
    """
    import gc
    import time

    model = copy.deepcopy(responsive_v3).train()
    good = _noise(1.0)
    kept = []
    for _ in range(3):
        with pytest.raises(ValueError) as info:
            model.embed([good, good[:10], good, good], sample_rate=SR, workers=2)
        kept.append(info.value)
        assert model.training
    deadline = time.monotonic() + 10
    while any(t.name.startswith("dcasenet-decode") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("dcasenet-decode")]
    model.eval()
    del kept
    gc.collect()
    assert not model.training  # no late restore undoes what the user set


def test_overlapping_calls_on_a_model_in_training_mode_leave_it_in_training_mode(responsive_v3):
    """Two calls on one model overlap (two threads do so; two ``iterate`` generators here, deterministically) and
    end in the order they started: the model runs in eval mode while any call runs, and is back in training mode
    after the last.

    Broken variant caught: each call saved and restored the mode on its own, so the second call saved "eval" (the
    first had set it) and restored it last, leaving the user's model in eval mode for good.
    """
    from dcasenet_hub.inference.pipeline import iterate

    model = copy.deepcopy(responsive_v3).train()
    clips = [_noise(1.0, seed=1), _noise(1.0, seed=2)]
    first = iterate(model, clips, sample_rate=SR, workers=0)
    next(first)
    second = iterate(model, clips, sample_rate=SR, workers=0)
    next(second)
    assert not model.training
    list(first)
    assert not model.training  # the second call still runs
    list(second)
    assert model.training


def test_untrained_weights_warning_is_said_once_per_model_and_short(authors_checkpoint, caplog):
    """A loop over files gets one short warning per model object, not one per call."""
    from dcasenet_hub import from_pretrained

    wav = _noise(1.0)
    for _ in range(2):  # a fresh model object warns again, once
        model = from_pretrained(authors_checkpoint)
        assert not model.config.trained_tasks
        caplog.clear()
        with caplog.at_level("WARNING", logger="dcasenet_hub"):
            for _ in range(4):
                embed(model, wav, sample_rate=SR)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1, warnings
        assert "No task is marked as trained" in warnings[0] and len(warnings[0]) < 250
        caplog.clear()
        with caplog.at_level("WARNING", logger="dcasenet_hub"):
            for _ in range(3):
                predict(model, wav, sample_rate=SR)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "scene, tags, events" in warnings[0], warnings


def test_input_mistakes_name_the_fix(v3_model, tmp_path):
    import soundfile as sf

    from dcasenet_hub.errors import OptionsError

    good, empty = tmp_path / "good.wav", tmp_path / "empty.wav"
    sf.write(good, _noise(1.0, seed=1), SR)
    empty.write_bytes(b"")
    with pytest.raises(OptionsError, match="an audio file is read at its own rate: leave sample_rate out"):
        embed(v3_model, str(good), sample_rate=8000)  # would be ignored, silently
    with pytest.raises(TypeError, match=r"^<input 0>: unsupported input type int"):
        embed(v3_model, 123)
    with pytest.raises(AudioLoadError, match="empty") as e:
        embed(v3_model, [str(good), str(empty)])
    if hasattr(e.value, "add_note"):  # Python 3.11+
        assert "iterate() goes on" in " ".join(e.value.__notes__)
