"""``embed`` / ``predict`` take Hugging Face datasets Audio items (``{"array", "sampling_rate", "path"}``), a list of
them, and a datasets column; the results equal those of the same waveform passed with ``sample_rate=``."""

from __future__ import annotations

import numpy as np
import pytest

from dcasenet_hub.inference.pipeline import embed, predict


@pytest.fixture(scope="module")
def wavs():
    rng = np.random.default_rng(4)
    return [(0.1 * rng.standard_normal(int(1.7 * 16000))).astype(np.float32),
            (0.1 * rng.standard_normal(int(2.2 * 22050))).astype(np.float32)]


def test_audio_items_equal_waveforms_with_their_rate(v3_model, wavs):
    items = [{"array": wavs[0], "sampling_rate": 16000, "path": "clips/a.wav"},
             {"array": wavs[1].tolist(), "sampling_rate": 22050}]  # datasets without a numpy format: lists
    got = embed(v3_model, items)
    ref = [embed(v3_model, wavs[0], sample_rate=16000), embed(v3_model, wavs[1], sample_rate=22050)]
    for g, r in zip(got, ref):
        assert np.array_equal(g.clip, r.clip) and np.array_equal(g.frame, r.frame)
    assert got[0].source == "clips/a.wav" and got[1].source == "<array 1>"
    assert got[0].sample_rate == 16000
    single = predict(v3_model, items[0])
    assert np.array_equal(single.scene_probs, predict(v3_model, wavs[0], sample_rate=16000).scene_probs)


def test_a_dict_without_array_or_rate_is_one_clear_error(v3_model, wavs):
    with pytest.raises(TypeError, match="needs 'array' .* and 'sampling_rate'"):
        embed(v3_model, {"array": wavs[0]})


def test_dataset_map_batched_adds_embedding_columns(v3_model, wavs):
    import datasets  # in the test extra: never skipped
    ds = datasets.Dataset.from_dict({"audio": [{"array": w, "sampling_rate": sr, "path": f"{i}.wav"}
                                               for i, (w, sr) in enumerate(zip(wavs, (16000, 22050)))]})

    def add_embeddings(batch):
        return {"embedding": [e.clip for e in embed(v3_model, batch["audio"])]}

    out = ds.map(add_embeddings, batched=True, batch_size=2)
    ref = embed(v3_model, wavs[0], sample_rate=16000).clip
    assert np.array_equal(np.asarray(out[0]["embedding"], dtype=np.float32), ref)
    column = embed(v3_model, ds["audio"])  # a whole column at once
    assert len(column) == 2 and np.array_equal(column[0].clip, ref)
