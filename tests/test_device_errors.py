"""A failure of the device path (CUDA error, device out of memory) is an error of the run, never "failed inputs".

The pipeline marks an input as failed for problems of that input (unreadable, too short, NaN ...). A GPU that fails
fails every input after it alike, so such errors are raised. Run here on the CPU: the device errors are raised by
stand-ins at the two places a device runs (the network's forward pass, and the GPU front-end forced on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcasenet_hub import audio as W
from dcasenet_hub.devices import is_device_error
from dcasenet_hub.inference import batching, iterate, pipeline

SR = 24000


def _clips(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(3 * SR)).astype(np.float32) for _ in range(n)]


def _device_errors() -> list[BaseException]:
    errors: list[BaseException] = [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered")]
    if isinstance(getattr(torch, "AcceleratorError", None), type):
        try:
            errors.append(torch.AcceleratorError("CUDA error: device-side assert triggered"))
        except TypeError:  # a torch whose AcceleratorError cannot be built from Python
            pass
    return errors


@pytest.fixture(scope="module")
def model():
    from dcasenet_hub import build_model

    return build_model("v3", seed=0).eval()


def test_device_errors_are_recognised_and_input_errors_are_not():
    assert all(is_device_error(e) for e in _device_errors())
    for e in (ValueError("bad"), RuntimeError("Error opening 'x.wav': Format not recognised."), OSError("disk"),
              W.InputError("x.wav: too short")):
        assert not is_device_error(e)


@pytest.mark.parametrize("error", _device_errors(), ids=lambda e: type(e).__name__)
def test_device_error_in_the_network_is_raised(model, monkeypatch, error):
    def failing(self, mel, tasks):
        raise error

    monkeypatch.setattr(batching._Batcher, "_forward", failing)
    with pytest.raises(type(error), match="CUDA"):
        list(iterate(model, _clips(), sample_rate=SR, workers=0))


def test_other_network_errors_still_fail_only_their_inputs(model, monkeypatch):
    """The contrast: an error that is not the device's keeps the documented behaviour (those inputs fail)."""
    def failing(self, mel, tasks):
        raise RuntimeError("something about this batch")

    monkeypatch.setattr(batching._Batcher, "_forward", failing)
    results = list(iterate(model, _clips(), sample_rate=SR, workers=0))
    assert len(results) == 3 and all(not r.ok for r in results)


@pytest.mark.parametrize("workers", [0, 2])
def test_device_error_in_the_gpu_front_end_is_raised(model, monkeypatch, workers):
    """With the features on the model's device (forced onto the CPU here), a device failure there is raised, from the
    decode workers too."""
    monkeypatch.setattr(pipeline, "_feature_device", lambda dev, backend: "cpu")
    real = W.features

    def features(x, **kw):
        if kw.get("device") == "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(x, **kw)

    monkeypatch.setattr(W, "features", features)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(iterate(model, _clips(), sample_rate=SR, workers=workers))
