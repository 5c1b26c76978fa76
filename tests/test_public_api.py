"""The public face: README's names work, the class users hold answers what they ask first,
and loading or optimising a model keeps that class (so ``embed``/``predict`` keep working)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import dcasenet_hub
from dcasenet_hub import errors, labels

SR = 24000


def test_public_surface_is_small_and_resolves():
    public = [n for n in dcasenet_hub.__all__ if n != "__version__"]
    assert len(public) <= 26, public  # 26th: read_embeddings, the one call that loads an embed folder
    for name in public:
        assert getattr(dcasenet_hub, name) is not None
    for name in ("load_audio", "resample", "log_mel", "build_model", "list_models", "finetune", "from_pretrained"):
        assert callable(getattr(dcasenet_hub, name)), name
    assert inspect.ismodule(dcasenet_hub.labels) and inspect.ismodule(dcasenet_hub.errors)


def test_every_public_exception_lives_in_errors():
    """One import path to catch them: the classes the layers raise are the ones in dcasenet_hub.errors."""
    from dcasenet_hub import audio, hub
    from dcasenet_hub.export import onnx
    from dcasenet_hub.finetuning import data
    from dcasenet_hub.train import datasets

    assert audio.AudioLoadError is errors.AudioLoadError is dcasenet_hub.AudioLoadError
    assert dcasenet_hub.CheckpointMismatchError is errors.CheckpointMismatchError
    assert onnx.OnnxUnavailableError is errors.OnnxUnavailableError
    assert data.DataError is errors.DataError and datasets.DatasetLayoutError is errors.DatasetLayoutError
    assert hub.api.OfflineError is errors.OfflineError
    assert audio.InputError is errors.InputError


def test_model_answers_sample_rate_labels_config():
    model = dcasenet_hub.build_model("v3", seed=0).eval()
    assert isinstance(model, dcasenet_hub.DcaseNet)
    assert model.sample_rate == 24000 == model.config.frontend.sample_rate
    assert model.labels == {"scene": labels.SCENES, "tags": labels.TAGS, "events": labels.EVENTS}
    out = model(torch.randn(1, 1, 128, 80), tasks=("scene", "tags", "events", "embeddings"))
    assert out.scene_logits.shape == (1, 10) and out.tag_logits.shape == (1, 80)
    assert out.event_probs.shape == (1, 16, 14) and out.clip_embeddings.shape == (1, 512)


@pytest.mark.parametrize("arch", ["v1", "v2", "v3"])
def test_loading_and_optimising_keep_the_public_class(tmp_path, arch):
    """``DcaseNet.from_pretrained`` builds ``cls(config)``: the loaded model has embed/predict; so has its fast copy.

    If the hub built its own class (the bare network), ``loaded.embed`` would not exist and this fails.
    """
    from dcasenet_hub.models import DcaseNetModule, optimize_for_inference

    model = dcasenet_hub.build_model(arch, seed=1).eval()
    model.save_pretrained(tmp_path / "m")
    for loaded in (dcasenet_hub.DcaseNet.from_pretrained(tmp_path / "m"), dcasenet_hub.from_pretrained(tmp_path / "m")):
        assert type(loaded) is dcasenet_hub.DcaseNet
        for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), k
    bare = DcaseNetModule.from_pretrained if hasattr(DcaseNetModule, "from_pretrained") else None
    assert bare is None  # the network itself knows nothing of files (layering)
    # one loader for users, one result type: the hub layer's machinery is not a second from_pretrained
    from dcasenet_hub import hub as hub_layer

    with pytest.raises(AttributeError, match="use dcasenet_hub.from_pretrained"):
        hub_layer.from_pretrained  # noqa: B018
    fast = optimize_for_inference(loaded)
    assert type(fast) is dcasenet_hub.DcaseNet and fast.runtime is not None and loaded.runtime is None
    wav = np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32) * 0.1
    np.testing.assert_allclose(fast.embed(wav, sample_rate=SR).clip, loaded.embed(wav, sample_rate=SR).clip,
                               atol=1e-5, rtol=0)


def test_dir_shows_the_public_names_not_what_the_package_imports_for_itself():
    import dcasenet_hub

    names = dir(dcasenet_hub)
    assert {"DcaseNet", "from_pretrained", "list_models", "embed", "__version__"} <= set(names)
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)


def test_from_pretrained_shows_its_options_and_names_itself_for_a_mistyped_one():
    """``help()`` and IDEs see the loading options (they are load_pretrained's, with the same defaults), and a typo
    is a TypeError of ``from_pretrained``.

    Broken variant caught: ``from_pretrained(name, **kwargs)`` hid the options, and ``devcie="cpu"`` was reported as
    an unexpected argument of the internal ``load_pretrained()``.
    """
    import inspect

    import dcasenet_hub
    from dcasenet_hub.hub.api import load_pretrained

    wanted = {n: p.default for n, p in inspect.signature(load_pretrained).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(wanted) == {"revision", "cache_dir", "device", "dtype", "local_files_only"}
    for fn in (dcasenet_hub.from_pretrained, dcasenet_hub.DcaseNet.from_pretrained):
        got = {n: p.default for n, p in inspect.signature(fn).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert got == wanted, fn
        with pytest.raises(TypeError, match=r"from_pretrained\(\) got an unexpected keyword argument 'devcie'"):
            fn("dcasenet-v3", devcie="cpu")


def test_a_models_config_prints_in_one_short_line():
    """Broken variant caught: the dataclass repr listed all 104 labels and every front-end field (2363 characters)."""
    from dcasenet_hub import build_model

    config = build_model("v3", seed=0).config
    assert repr(config) == ("ModelConfig(arch='v3', model_id=None, 10 scenes, 80 tags, 14 events, "
                            "trained_tasks=())")
