"""Correctness of the optimised inference paths against the fp32 reference and ONNX export (the benchmark harness's
own tests are beside it, in benchmarks/test_harness.py).

No timings are asserted here (CI machines are shared and noisy); docs/performance.md holds the measurements.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dcasenet_hub import build_model
from dcasenet_hub.inference.runner import inference_runner
from dcasenet_hub.models.fast import (
    FP32_TOLERANCE,
    LOW_PRECISION_TOLERANCE,
    FastRuntime,
    optimize_for_inference,
)

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("scene_logits", "tag_logits", "event_probs", "frame_embeddings", "clip_embeddings", "scene_embeddings")


def _random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch-norm non-trivial statistics and affine parameters, so folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def _reference(model: torch.nn.Module, mel: torch.Tensor, tasks=None) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(mel, tasks=tasks).to_dict()


def _assert_close(out: dict, ref: dict, tol: float, *, relative: bool = False) -> None:
    assert set(out) == set(ref)
    for k, v in ref.items():
        got = out[k]
        assert got.dtype == torch.float32, k
        assert got.shape == v.shape, k
        scale = max(1.0, float(v.abs().max())) if relative else 1.0
        diff = float((got - v).abs().max())
        assert diff <= tol * scale, f"{k}: max abs diff {diff:.3g} > {tol * scale:.3g}"


@pytest.fixture(scope="module")
def bn_models() -> dict[str, torch.nn.Module]:
    """v1, v2, v3 with random weights and non-trivial batch-norm statistics (shared, never modified)."""
    return {arch: _random_bn(build_model(arch, seed=3)) for arch in ("v1", "v2", "v3")}


@pytest.mark.parametrize("arch", ["v1", "v2", "v3"])
def test_folded_channels_last_fp32_matches_reference(arch, bn_models):
    model = bn_models[arch]
    mel = torch.randn(2, 1, 128, 163, generator=torch.Generator().manual_seed(1))
    ref = _reference(model, mel)
    fast = optimize_for_inference(model)
    assert type(fast) is type(model) and isinstance(fast.runtime, FastRuntime) and model.runtime is None
    assert fast.runtime.options.exact and fast.runtime.options.channels_last
    # batch-norm really is gone from the copy, and still in the original
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    out = fast(mel).to_dict()
    _assert_close(out, ref, FP32_TOLERANCE, relative=True)
    assert torch.equal(out["frame_times"], ref["frame_times"])


@pytest.mark.parametrize("options", [{"channels_last": False}, {"fold_batchnorm": False}])
def test_each_optimisation_alone_is_exact(options, bn_models):
    model = bn_models["v3"]
    mel = torch.randn(1, 1, 128, 120, generator=torch.Generator().manual_seed(2))
    _assert_close(optimize_for_inference(model, **options)(mel).to_dict(), _reference(model, mel),
                  FP32_TOLERANCE, relative=True)


def test_fast_v3_reproduces_authors_reference_outputs(v3_model, fixtures_dir):
    io = dict(np.load(fixtures_dir / "v3_reference_io.npz"))
    fast = optimize_for_inference(v3_model)
    for case in ("short", "long"):
        out = fast(torch.from_numpy(io[f"{case}_input"]))
        for ours, key in ((out.scene_logits, "asc_logits"), (out.tag_logits, "tag_logits"),
                          (out.event_probs, "sed_probs")):
            expected = io[f"{case}_{key}"]
            assert ours.shape == expected.shape
            assert np.abs(ours.numpy() - expected).max() <= FP32_TOLERANCE * max(1.0, np.abs(expected).max()), key


@pytest.mark.parametrize("tasks", [("scene",), ("events",), ("tags", "embeddings")])
def test_task_subsets_give_the_same_fields(tasks, bn_models):
    model = bn_models["v3"]
    mel = torch.randn(3, 1, 128, 90, generator=torch.Generator().manual_seed(3))
    ref = _reference(model, mel, tasks)
    out = optimize_for_inference(model)(mel, tasks=tasks).to_dict()
    _assert_close(out, ref, FP32_TOLERANCE, relative=True)


@pytest.mark.bf16
def test_bf16_within_stated_tolerance(responsive_v3, fixtures_dir):
    io = dict(np.load(fixtures_dir / "v3_reference_io.npz"))
    mel = torch.from_numpy(io["short_input"])  # two different inputs: a swapped batch must not pass
    ref = _reference(responsive_v3, mel)
    low = optimize_for_inference(responsive_v3, dtype="bf16")
    assert low.runtime.options.exact is False
    out = low(mel).to_dict()
    _assert_close({k: out[k] for k in FIELDS}, {k: ref[k] for k in FIELDS}, LOW_PRECISION_TOLERANCE, relative=True)
    # bf16 is really used: the outputs are not bit-identical to fp32
    assert any(not torch.equal(out[k], ref[k]) for k in FIELDS)
    # the broken variant (batch items swapped) is far outside the tolerance in every field
    for k in FIELDS:
        with pytest.raises(AssertionError):
            _assert_close({k: out[k].flip(0)}, {k: ref[k]}, LOW_PRECISION_TOLERANCE, relative=True)


def test_dtype_names_and_cpu_fp16_warning(bn_models, caplog):
    with caplog.at_level("WARNING", logger="dcasenet_hub.models.fast"):
        fast = optimize_for_inference(bn_models["v1"], dtype="fp16", device="cpu")
    assert fast.runtime.options.dtype == torch.float16 and "prefer dtype='bf16'" in caplog.text
    assert optimize_for_inference(bn_models["v1"], dtype="bfloat16").runtime.options.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'int8'; use one of"):
        optimize_for_inference(bn_models["v1"], dtype="int8")


def test_optimized_model_is_inference_only_and_original_untouched():
    model = build_model("v2", seed=6)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert model.training and not fast.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert fast.config == model.config and fast.arch == "v2" and fast.frame_hop_s == model.frame_hop_s
    with pytest.raises(RuntimeError, match="cannot be trained"):
        fast.train()
    with pytest.raises(RuntimeError, match="optimize_for_inference"):
        fast.load_state_dict_strict(before, source="x.pt")
    assert not any(p.requires_grad for p in fast.parameters())
    assert optimize_for_inference(fast) is fast  # same options: nothing to do


def test_inference_runner_is_cached_and_follows_weight_changes():
    """The copy is kept on the model and rebuilt after each way the weights change; a stale copy fails the
    comparison with the reference (the edits below move the outputs far beyond the tolerance)."""
    model = _random_bn(build_model("v3", seed=7)).eval()
    mel = torch.randn(1, 1, 128, 80, generator=torch.Generator().manual_seed(4))
    first = inference_runner(model)
    assert inference_runner(model) is first and len(model.inference_copies) == 1

    def fresh_and_exact(previous):
        runner = inference_runner(model)
        assert runner is not previous
        _assert_close(runner(mel).to_dict(), _reference(model, mel), FP32_TOLERANCE, relative=True)
        return runner

    # a training step with the model left in eval mode (frozen batch-norm): the gradient reaching the weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(mel, tasks=("scene",)).scene_logits.sum().backward()
    opt.step()
    runner = fresh_and_exact(first)
    # training mode (batch-norm statistics move in the forward passes)
    model.train()
    with torch.no_grad():
        model(mel)
    model.eval()
    runner = fresh_and_exact(runner)
    # loaded weights
    model.load_state_dict(_random_bn(build_model("v3", seed=8)).state_dict())
    runner = fresh_and_exact(runner)
    # weights loaded as new Parameter objects
    model.load_state_dict(_random_bn(build_model("v3", seed=9)).state_dict(), assign=True)
    runner = fresh_and_exact(runner)
    # weights edited by hand: said explicitly
    with torch.no_grad():
        model.fc_ASC.bias.add_(1.0)
        model.conv_block1.bn1.running_mean.add_(0.1)
    model.inference_copies.clear()
    runner = fresh_and_exact(runner)
    # a deep copy of the model does not carry the copies along
    import copy

    assert len(copy.deepcopy(model).inference_copies) == 0


def test_a_parameter_frozen_when_the_copy_was_made_then_trained_drops_the_copy():
    """Frozen parameters cannot carry a gradient hook. Frozen, used (copy made), unfrozen, trained one step in eval
    mode, frozen again: the next ``embed`` equals a fresh model with the same weights.

    Broken variant caught: only parameters that required gradients when the copy was made were watched, and the
    copy's key (addresses, dtypes, ``requires_grad``) was the same again after re-freezing, so the old copy ran.
    """
    x = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    model = build_model("v3", seed=0).eval()
    model.requires_grad_(False)
    model.embed(x, sample_rate=24000, workers=0)
    model.requires_grad_(True)
    mel = torch.randn(2, 1, 128, 80, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(mel, tasks=("scene",)).scene_logits.pow(2).mean().backward()
    opt.step()
    model.requires_grad_(False)
    fresh = build_model("v3", seed=1)
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(model.embed(x, sample_rate=24000, workers=0).clip,
                                  fresh.eval().embed(x, sample_rate=24000, workers=0).clip)


def test_a_gradient_into_any_parameter_drops_the_copies_after_loads_that_make_new_parameters():
    """``load_state_dict(assign=True)`` replaces every Parameter object; CPython often puts a new one at a freed
    one's address. After three such loads, a gradient accumulated into any single parameter still empties the
    model's inference copies (a training step on it would otherwise leave ``embed`` on the old weights).

    Broken variant caught: parameters were remembered by ``id()`` alone, so a new parameter at an old address got
    no gradient hook.
    """
    model = build_model("v3", seed=7).eval()
    for _ in range(3):
        model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
        model.inference_copies.put(model, "key", object())
    silent = []
    for name, p in model.named_parameters():
        model.inference_copies.put(model, "key", object())
        (p * 0).sum().backward()
        if len(model.inference_copies):
            silent.append(name)
    assert not silent, f"{len(silent)} parameters' gradients left the copies in place: {silent[:5]}"


# ----------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_v3(tmp_path_factory, v3_model):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dcasenet_hub.export.onnx import export_onnx

    return export_onnx(v3_model, tmp_path_factory.mktemp("onnx") / "v3.onnx", check=False)


def test_onnx_matches_pytorch_on_other_batch_and_length(onnx_v3, v3_model, fixtures_dir):
    from dcasenet_hub.export.onnx import (
        ONNX_TOLERANCE,
        OUTPUT_NAMES,
        check_onnx,
        onnx_session,
        run_onnx,
    )

    diffs = check_onnx(v3_model, onnx_v3, batch=3, frames=417)
    assert set(diffs) == set(OUTPUT_NAMES) and max(diffs.values()) <= ONNX_TOLERANCE
    io = dict(np.load(fixtures_dir / "v3_reference_io.npz"))
    out = run_onnx(onnx_session(onnx_v3), io["long_input"])
    assert np.abs(out["event_probs"] - io["long_sed_probs"]).max() < ONNX_TOLERANCE
    assert np.abs(out["scene_logits"] - io["long_asc_logits"]).max() < ONNX_TOLERANCE


def test_onnxruntime_sessions_do_not_keep_a_memory_arena(onnx_v3):
    """The arena keeps the largest batch's buffers for the session's life (a 1 h file peaked at 1027 MiB with it,
    744 MiB without: docs/performance.md); the backend's sessions run without it unless asked."""
    from dcasenet_hub.export.onnx import onnx_session

    assert onnx_session(onnx_v3).get_session_options().enable_cpu_mem_arena is False
    assert onnx_session(onnx_v3, memory_arena=True).get_session_options().enable_cpu_mem_arena is True


def test_onnxruntime_backend_same_fields_as_pytorch(bn_models):
    pytest.importorskip("onnxruntime")
    from dcasenet_hub.export.runtime import OnnxRuntime

    model = bn_models["v2"]
    ort_model = inference_runner(model, backend="onnxruntime")
    assert type(ort_model) is type(model) and isinstance(ort_model.runtime, OnnxRuntime)
    assert ort_model.config == model.config
    mel = torch.randn(2, 1, 128, 95, generator=torch.Generator().manual_seed(8))
    for tasks in (None, ("scene",), ("embeddings",)):
        _assert_close(ort_model(mel, tasks=tasks).to_dict(), _reference(model, mel, tasks), FP32_TOLERANCE,
                      relative=True)
    with pytest.raises(ValueError, match="fp32 or int8 on CPU"):
        inference_runner(model, backend="onnxruntime", dtype="bf16")


def test_onnx_check_detects_a_different_model(onnx_v3):
    from dcasenet_hub.export.onnx import check_onnx

    other = _random_bn(build_model("v3", seed=11))  # same architecture, other weights
    with pytest.raises(ValueError, match="differ from PyTorch"):
        check_onnx(other, onnx_v3, batch=1, frames=60)


def test_cli_export_onnx(tmp_path, authors_checkpoint, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dcasenet_hub.cli import main

    out = tmp_path / "sub" / "model.onnx"
    assert main(["export", "--format", "onnx", str(authors_checkpoint), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "onnxruntime matches PyTorch" in text
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary file
    graph = out.read_bytes()
    assert main(["export", "--format", "onnx", str(authors_checkpoint), "-o", str(out), "--no-check"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == graph
    # refused before the model loads, naming the flag: an opset the network cannot be exported in (99 was a
    # RuntimeError after tracing, exit 4; 0 silently became 17), and -o a folder (refused only at the final write)
    for flags, said in ((["-o", str(out), "--opset", "99"], "--opset 99: must be a whole number from 13 to 20"),
                        (["-o", str(out), "--opset", "0"], "--opset 0: must be a whole number from 13 to 20"),
                        (["-o", str(tmp_path)], f"-o {tmp_path} is a folder; give the name of the .onnx file")):
        assert main(["export", "--format", "onnx", "/nonexistent-model", *flags, "--overwrite"]) == 2, flags
        assert said in capsys.readouterr().err
    assert main(["bench", "--quick", "-o", str(tmp_path)]) == 2
    assert f"-o {tmp_path} is a folder; give the name of the JSON file" in capsys.readouterr().err


def test_export_without_onnx_names_the_extra(monkeypatch, tmp_path):
    from dcasenet_hub.export import onnx as ex

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ex.OnnxUnavailableError, match=r"dcasenet-hub\[onnx\]"):
        ex.export_onnx(build_model("v1", seed=0).eval(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
