"""A failure of the GPU front-end (resampling and features on the model's device) is an error of the run, never
"failed inputs"; tests/test_errors.py covers the network's forward pass.

Run here on the CPU: the device branch is forced onto the CPU (``feature_device="cpu"``) and the feature step raises
the errors a GPU gives (a CUDA error as torch reports it, ``torch.AcceleratorError``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcasenet_hub import audio as W
from dcasenet_hub.inference import iterate, pipeline

SR = 24000


def _device_errors() -> list[BaseException]:
    errors: list[BaseException] = [RuntimeError("CUDA error: an illegal memory access was encountered")]
    if isinstance(getattr(torch, "AcceleratorError", None), type):
        errors.append(torch.AcceleratorError("CUDA error: device-side assert triggered"))
    return errors


@pytest.fixture(scope="module")
def model():
    from dcasenet_hub import build_model

    return build_model("v3", seed=0).eval()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("error", _device_errors(), ids=lambda e: type(e).__name__)
def test_device_error_in_the_gpu_front_end_is_raised(model, monkeypatch, workers, error):
    """With the features on the model's device (forced onto the CPU here), a device failure there is raised, from the
    decode workers too, and the inputs before it do not hide it."""
    monkeypatch.setattr(pipeline, "_feature_device", lambda dev, backend: "cpu")
    real = W.features

    def features(x, **kw):
        if kw.get("device") == "cpu":
            raise error
        return real(x, **kw)

    monkeypatch.setattr(W, "features", features)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(3 * SR)).astype(np.float32) for _ in range(3)]
    with pytest.raises(type(error), match="CUDA error"):
        list(iterate(model, clips, sample_rate=SR, workers=workers))
