"""Training data: batch streams, the authors' crops (SED label alignment, ASC test-time crops), feature preparation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dcasenet_hub import labels
from dcasenet_hub.train.torch_data import (
    BatchStream,
    EvalClips,
    FeatureStore,
    StreamSampler,
    TrainCrops,
    crop_frames,
)


@dataclass
class _Item:
    path: Path
    target: object
    channel: int | None = None
    name: str = ""


def test_crop_lengths_are_the_authors():
    assert crop_frames("asc", 5.0) == 251  # 120 000 samples -> 251 frames
    assert crop_frames("tag", 5.0) == 251
    assert crop_frames("sed", 30.0) == 1500  # 300 labels of 100 ms
    with pytest.raises(ValueError, match="at least 40"):
        crop_frames("asc", 0.5)


def test_batch_stream_passes_cover_every_item_once_and_shards_per_rank():
    s = BatchStream(n_items=10, batch_size=4, seed=1, task="asc")
    entries = [e for b in range(5) for e in s.batch(b)]  # 20 entries = two passes
    assert sorted(i for i, _ in entries[:10]) == list(range(10))
    assert sorted(i for i, _ in entries[10:]) == list(range(10))
    assert entries[:10] != entries[10:]  # reshuffled pass
    assert len({seed for _, seed in entries}) == 20  # one crop seed per drawn example
    assert BatchStream(10, 4, 1, "asc").batch(3) == s.batch(3)  # deterministic, random access (resume)
    assert BatchStream(10, 4, 2, "asc").batch(0) != s.batch(0)
    assert BatchStream(10, 4, 1, "tag").batch(0) != s.batch(0)
    assert s.batch(2, rank=0, world=2) + s.batch(2, rank=1, world=2) == s.batch(2)
    with pytest.raises(ValueError, match="not divisible"):
        s.batch(0, world=3)
    sampler = iter(StreamSampler(s, start=3))
    assert next(sampler) == s.batch(3) and next(sampler) == s.batch(4)


def _store_with(tmp_path: Path, arrays: dict[str, np.ndarray]) -> tuple[FeatureStore, dict[str, Path]]:
    from dcasenet_hub.train.prepare import cache_file

    root, cache = tmp_path / "root", tmp_path / "cache"
    paths = {}
    for name, arr in arrays.items():
        p = root / f"{name}.wav"
        f = cache_file(cache, root, p)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, arr.astype(np.float32))
        paths[name] = p
    return FeatureStore(cache, root), paths


def test_sed_crop_aligns_features_and_labels(tmp_path):
    """Feature crop [5 stt, 5 stt + 1500) goes with labels [stt, stt + 300); stt uniform over 0..299."""
    t = 3000
    feats = np.broadcast_to(np.arange(t, dtype=np.float32), (4, 128, t)).copy()
    target = np.zeros((600, 14), np.float32)
    target[:, 0] = np.arange(600)  # label value = its frame index
    store, paths = _store_with(tmp_path, {"rec": feats})
    ds = TrainCrops("sed", [_Item(paths["rec"], target, channel=2)], store, crop_frames=1500, labels=labels.EVENTS)
    mean, std = (t - 1) / 2, np.arange(t, dtype=np.float64).std(ddof=1)  # whole channel normalised first
    starts = []
    for seed in range(40):
        x, y = ds[(0, seed)]
        assert x.shape == (1, 128, 1500) and y.shape == (300, 14)
        first_frame = round(float(x[0, 0, 0]) * std + mean)
        stt = int(y[0, 0])
        assert first_frame == 5 * stt and 0 <= stt <= 299
        assert np.allclose(x[0, 5].numpy() * std + mean, np.arange(5 * stt, 5 * stt + 1500), atol=1e-2)
        starts.append(stt)
    assert len(set(starts)) > 30
    x2, _ = ds[(0, 7)]
    assert torch.equal(ds[(0, 7)][0], x2)  # a crop is a function of its seed


def test_asc_and_tag_training_crops_are_normalised_per_crop_and_tiled(tmp_path):
    rng = np.random.default_rng(0)
    store, paths = _store_with(tmp_path, {"scene": rng.normal(size=(1, 128, 500)) * 3 + 7,
                                          "short": rng.normal(size=(1, 128, 60))})
    asc = TrainCrops("asc", [_Item(paths["scene"], "park")], store, crop_frames=251, labels=labels.SCENES)
    x, y = asc[(0, 5)]
    assert x.shape == (1, 128, 251) and y.item() == labels.SCENES.index("park")
    assert torch.allclose(x.mean(-1), torch.zeros(1, 128), atol=1e-5)
    assert torch.allclose(x.std(-1), torch.ones(1, 128), atol=1e-4)
    tag = TrainCrops("tag", [_Item(paths["short"], np.eye(80, dtype=np.float32)[3])], store, crop_frames=251,
                     labels=labels.TAGS)
    x, y = tag[(0, 1)]  # 60 frames tiled by doubling to 480, then cropped
    assert x.shape == (1, 128, 251) and y.argmax().item() == 3
    raw = np.load(store.path_for(paths["short"]))[0]
    tiled = np.concatenate([raw] * 8, axis=-1)
    crops = [tiled[:, s:s + 251] for s in range(480 - 251 + 1)]
    crops = [(c - c.mean(-1, keepdims=True)) / c.std(-1, ddof=1, keepdims=True) for c in crops]
    assert min(np.abs(c - x[0].numpy()).max() for c in crops) < 1e-4


def test_asc_evaluation_uses_three_crops_start_middle_end(tmp_path):
    """The scene evaluation of a 10 s clip: the authors' crops [0:120000], [60000:180000], [-120000:] of the
    pre-emphasised 24 kHz waveform (raw samples [0, 120001), [60000, 180001), [119999, 240000)), each normalised
    alone. The old evaluation cropped the cached whole-clip features at frame 249 (sample 119520) for the last crop
    and kept the whole clip's edge frames; that fails here by far more than the tolerance."""
    import soundfile as sf

    from dcasenet_hub.audio import log_mel
    from dcasenet_hub.train.prepare import audio_file

    rng = np.random.default_rng(1)
    wav = np.round(rng.normal(scale=0.1, size=240000) * 32768).clip(-32768, 32767) / 32768
    feats = log_mel(wav.astype(np.float32), normalize=False).numpy()  # the cached whole-clip features
    store, paths = _store_with(tmp_path, {"clip": feats[None]})
    kept = audio_file(store.cache_dir, store.root, paths["clip"])
    kept.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(kept), wav, 24000, subtype="PCM_16")
    ds = EvalClips("scene", [_Item(paths["clip"], 4)], store, labels=labels.SCENES)
    x, y, _, _ = ds[0]
    assert x.shape == (3, 1, 128, 251) and y == 4
    for k, s in enumerate((0, 60000, 119999)):
        ref = log_mel(wav[s:s + 120001].astype(np.float32)).numpy()  # pre-emphasis inside, normalised alone
        assert np.allclose(x[k, 0].numpy(), ref, atol=1e-5), k
    old_last = feats[:, 249:249 + 251]
    old_last = (old_last - old_last.mean(-1, keepdims=True)) / old_last.std(-1, ddof=1, keepdims=True)
    assert np.abs(x[2, 0].numpy() - old_last).max() > 0.1  # the old crop is another input
    short = EvalClips("asc", [_Item(paths["clip"], 4)], store, labels=labels.SCENES, scene_window_s=0.8,
                      scene_hop_s=0.4)
    assert short[0][0].shape == (24, 1, 128, 41)  # 0.8 s crops every 0.4 s: 24 of them, the last at the end
    tag = EvalClips("tag", [_Item(paths["clip"], np.zeros(80, np.float32))], store, labels=labels.TAGS)
    assert tag[0][0].shape == (1, 1, 128, 500)  # whole clips stay on the cached features
    with pytest.raises(FileNotFoundError, match="data prepare"):
        kept.unlink()
        ds[0]


def test_prepare_caches_16bit_24khz_log_mel_and_skips_done_files(tmp_path):
    import soundfile as sf

    from dcasenet_hub.audio import load_audio, log_mel
    from dcasenet_hub.train.prepare import prepare_items

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    files = []
    for k in range(2):
        p = root / "sub" / f"clip{k}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(str(p), 0.3 * rng.standard_normal(44100), 44100, subtype="PCM_24")
        files.append(p)
    rep = prepare_items("asc", root, files, cache_dir=tmp_path / "cache", progress=False, keep_audio=True)
    assert rep.prepared == {"asc": 2} and rep.skipped == {"asc": 0} and not rep.failed
    store = FeatureStore(rep.dirs["asc"], root)
    feats = store.load(files[0])
    wav, _ = load_audio(files[0], sample_rate=24000)
    pcm16 = np.clip(np.round(wav.astype(np.float64) * 32768), -32768, 32767) / 32768
    ref = log_mel(pcm16.astype(np.float32), normalize=False).numpy()
    assert feats.shape == (1, 128, 50) and np.allclose(feats[0], ref, atol=1e-4)
    kept, sr = sf.read(str(rep.dirs["asc"] / "audio24k" / "sub" / "clip0.wav"), dtype="int16")
    assert sr == 24000 and kept.shape == (24000,)
    rep2 = prepare_items("asc", root, files, cache_dir=tmp_path / "cache", progress=False)
    assert rep2.prepared == {"asc": 0} and rep2.skipped == {"asc": 2}
    from dcasenet_hub.config import FrontendConfig

    with pytest.raises(ValueError, match="other front-end settings"):
        prepare_items("asc", root, files, cache_dir=tmp_path / "cache", progress=False,
                      config=FrontendConfig(n_mels=64))
    bad = root / "broken.wav"
    bad.write_bytes(b"not audio")
    rep3 = prepare_items("asc", root, files + [bad], cache_dir=tmp_path / "cache", progress=False)
    assert [Path(p).name for p, _ in rep3.failed] == ["broken.wav"]


def test_missing_cache_file_says_how_to_prepare(tmp_path):
    store = FeatureStore(tmp_path / "cache", tmp_path)
    with pytest.raises(FileNotFoundError, match="data prepare"):
        store.load(tmp_path / "nothing.wav")


def test_data_prepare_command_caches_the_authors_splits(tmp_path, capsys):
    from dcasenet_hub.cli import main
    from dcasenet_hub.train.minidata import make_mini_datasets

    roots = make_mini_datasets(tmp_path / "mini", tasks=("asc",), asc_train_per_scene=1, asc_eval_per_scene=1,
                               asc_duration=1.0, progress=False)
    args = ["data", "prepare", "--asc-root", str(roots.asc), "--cache-dir", str(tmp_path / "c"), "--workers", "0"]
    assert main(args) == 0
    assert "asc: 20 files prepared, 0 already cached" in capsys.readouterr().out
    assert main(args) == 0
    assert "asc: 0 files prepared, 20 already cached" in capsys.readouterr().out
    # the 10 training clips as features, the 10 scene evaluation clips as 24 kHz WAV only (the evaluation reads that)
    assert len(list((tmp_path / "c").rglob("*.wav.npy"))) == 10
    assert len(list((tmp_path / "c").rglob("audio24k/**/*.wav"))) == 10
