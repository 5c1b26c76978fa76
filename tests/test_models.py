"""The architectures: v3 parity with the authors' outputs, parameter counts, heads, strict loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcasenet_hub import (
    CheckpointMismatchError,
    DcaseNet,
    InputTooShortError,
    ModelConfig,
    build_model,
    labels,
)

PAPER_M = 2**20  # the paper's 13.2M for v3 is 13,882,920 / 2**20


@pytest.fixture(scope="module")
def reference_io(fixtures_dir):
    return dict(np.load(fixtures_dir / "v3_reference_io.npz"))


@pytest.mark.parametrize("case", ["short", "long"])
def test_v3_reproduces_authors_outputs(v3_model, reference_io, case):
    with torch.inference_mode():
        out = v3_model(torch.from_numpy(reference_io[f"{case}_input"]))
    for ours, key in ((out.scene_logits, "asc_logits"), (out.tag_logits, "tag_logits"), (out.event_probs, "sed_probs")):
        expected = reference_io[f"{case}_{key}"]
        assert ours.shape == expected.shape
        assert np.abs(ours.numpy() - expected).max() < 1e-5, key


def test_v3_loads_authors_checkpoint_via_from_pretrained(authors_checkpoint, reference_io):
    model = DcaseNet.from_pretrained(authors_checkpoint)
    assert model.arch == "v3" and not model.training
    with torch.inference_mode():
        out = model(torch.from_numpy(reference_io["short_input"]), tasks=("scene",))
    assert np.abs(out.scene_logits.numpy() - reference_io["short_asc_logits"]).max() < 1e-5


def test_parameter_counts(fixtures_dir):
    import json

    spec = json.loads((fixtures_dir / "v3_state_dict_spec.json").read_text())
    v3 = build_model("v3")
    assert v3.num_parameters() == 13_882_920 == spec["n_parameters"]
    assert {k: list(v.shape) for k, v in v3.state_dict().items()} == {k: v["shape"] for k, v in spec["keys"].items()}
    for arch, paper_millions in (("v1", 8.7), ("v2", 8.9), ("v3", 13.2)):
        n = build_model(arch).num_parameters() / PAPER_M
        assert abs(n - paper_millions) / paper_millions < 0.01, (arch, n)


@pytest.mark.parametrize("arch", ["v1", "v2", "v3"])
def test_heads_shapes_and_times(arch):
    model = build_model(arch, seed=0).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 128, 251))
    assert out.scene_logits.shape == (2, 10)
    assert out.tag_logits.shape == (2, 80)
    assert out.event_probs.shape == (2, 6 * 8, 14)
    assert out.frame_embeddings.shape == (2, 6, 512)
    assert out.clip_embeddings.shape == (2, 512)
    assert out.scene_embeddings.shape == (2, 128)
    torch.testing.assert_close(out.clip_embeddings, out.frame_embeddings.mean(1))
    # step i covers feature frames [40 i, 40 i + 40) at 20 ms: centre 0.8 i + 0.39 s
    torch.testing.assert_close(out.frame_times, torch.arange(6) * 0.8 + 0.39)
    assert model.frame_hop_s == pytest.approx(0.8) and model.event_hop_s == pytest.approx(0.1)


@pytest.mark.parametrize("arch", ["v1", "v2", "v3"])
def test_tasks_subset_computes_only_what_is_asked(arch):
    model = build_model(arch, seed=0).eval()
    x = torch.randn(1, 1, 128, 120)
    with torch.inference_mode():
        full = model(x)
        for task, field in (("scene", "scene_logits"), ("tags", "tag_logits"), ("events", "event_probs"),
                            ("embeddings", "clip_embeddings")):
            part = model(x, tasks=(task,))
            set_fields = set(part.to_dict())
            assert field in set_fields
            assert "tag_logits" not in set_fields or task == "tags"
            assert "event_probs" not in set_fields or task == "events"
            torch.testing.assert_close(getattr(part, field), getattr(full, field))


def test_no_head_is_computed_twice():
    model = build_model("v3", seed=0).eval()
    calls: dict[str, int] = {}
    for name in ("layer_ASC", "gru_1", "gru_2", "layer_TAG", "event_fc", "conv_block4_2"):
        getattr(model, name).register_forward_hook(lambda *_a, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    with torch.inference_mode():
        model(torch.randn(1, 1, 128, 80))
    assert calls == {k: 1 for k in calls} and len(calls) == 6
    calls.clear()
    with torch.inference_mode():
        model(torch.randn(1, 1, 128, 80), tasks=("scene",))
    assert set(calls) == {"layer_ASC", "conv_block4_2"}


def test_input_errors():
    model = build_model("v3").eval()
    with pytest.raises(InputTooShortError, match="at least 40"):
        model(torch.randn(1, 1, 128, 39))
    with pytest.raises(ValueError, match="batch, 1, n_mels, frames"):
        model(torch.randn(128, 100))
    with pytest.raises(ValueError, match="Unknown task"):
        model(torch.randn(1, 1, 128, 40), tasks=("scenes",))
    with pytest.raises(ValueError, match="Unknown architecture 'v4'. Known: v1, v2, v3"):
        build_model("v4")


def test_strict_loading_lists_missing_and_extra_keys(v3_state_dict):
    sd = dict(v3_state_dict)
    sd.pop("fc_ASC.bias")
    sd["module.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        build_model("v3").load_state_dict_strict(sd, source="my.pt")
    msg = str(info.value)
    assert "my.pt" in msg and "Missing keys (1): fc_ASC.bias" in msg and "Unexpected keys (1): module.extra" in msg
    with pytest.raises(CheckpointMismatchError, match="Missing keys"):
        build_model("v1").load_state_dict_strict(dict(v3_state_dict))


def test_head_sizes_follow_labels():
    cfg = ModelConfig(arch="v3", scene_labels=("a", "b", "c"))
    model = DcaseNet(cfg)
    assert model.fc_ASC.out_features == 3 and model.layer_TAG[-1].out_features == 80
    assert len(labels.SCENES) == 10 and len(labels.TAGS) == 80 and len(labels.EVENTS) == 14


def test_config_round_trip(tmp_path):
    cfg = ModelConfig(arch="v2", trained_tasks=("scene",), model_id="x", provenance="test")
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="model config field .bogus. is 1; allowed: no such key; known: arch, "):
        ModelConfig.from_dict({"arch": "v3", "bogus": 1})
