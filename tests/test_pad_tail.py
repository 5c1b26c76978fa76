"""Frames end at the last full 0.8 s step unless pad_tail / --pad-tail pads the last step."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from dcasenet_hub.cli import main
from dcasenet_hub.inference.pipeline import embed, predict


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 24000))).astype(np.float32)


@pytest.fixture(scope="module")
def short_windows_v3(responsive_v3):
    """responsive_v3 with 9.6 s event windows: an 11.3 s input crosses a window boundary as 61.3 s does with the
    standard 60 s windows (the boundary code is the same; the input is five times shorter)."""
    import dataclasses

    from dcasenet_hub import DcaseNet

    cfg = responsive_v3.config
    model = DcaseNet(dataclasses.replace(cfg, windows=dataclasses.replace(cfg.windows, event_window_s=9.6)))
    model.load_state_dict(responsive_v3.state_dict())
    return model.eval()


# 3 s: one window that is both scene crop and event window; 11.3 s with 9.6 s windows: a window boundary with
# look-ahead passes (at hop 0.4; hop 0.1 there is the same code with 8 passes)
@pytest.mark.parametrize("seconds, hop", [(10.0, None), (10.0, 0.4), (10.0, 0.1), (3.0, None), (3.0, 0.4),
                                          (3.0, 0.1), (11.3, None), (11.3, 0.4)])
def test_pad_tail_reaches_the_end_of_the_file_with_any_hop(request, seconds, hop):
    responsive_v3 = request.getfixturevalue("short_windows_v3" if seconds > 10 else "responsive_v3")
    x = _noise(seconds)
    step = 0.8
    base = embed(responsive_v3, x, sample_rate=24000, hop=hop)
    padded = embed(responsive_v3, x, sample_rate=24000, hop=hop, pad_tail=True)
    # default: frames are whole 0.8 s steps inside the file; on the 0.8 s grid the last ends at 9.6 s for 10 s
    assert base.frame_times[-1] + 0.41 <= seconds + 1e-3
    if hop is None:
        assert base.frame_times[-1] + 0.41 == pytest.approx(math.floor(seconds / step) * step, abs=1e-3)
    # pad_tail: the last step reaches the end of the file
    assert padded.frame_times[-1] + 0.41 >= seconds - 1e-3
    assert padded.frame.shape[0] > base.frame.shape[0] and np.isfinite(padded.frame).all()
    np.testing.assert_array_equal(padded.frame_times[:base.frame.shape[0]], base.frame_times)
    pb = predict(responsive_v3, x, sample_rate=24000, hop=hop)
    pp = predict(responsive_v3, x, sample_rate=24000, hop=hop, pad_tail=True)
    grid = pp.event_hop_s
    assert pb.event_probs.shape[0] * grid <= math.floor(seconds / step) * step + 1e-6
    assert pp.event_probs.shape[0] == math.ceil(seconds / grid - 1e-9)  # event scores up to the end, not beyond
    assert max(off for _, off, _ in pp.detect(threshold=0.0)) == pytest.approx(seconds, abs=1e-3)
    np.testing.assert_array_equal(pp.scene_probs, pb.scene_probs)  # scenes never see the padding


def test_pad_tail_is_a_no_op_on_whole_steps_and_refused_for_the_scene_layer(responsive_v3):
    x = _noise(9.6)  # 12 whole steps: nothing to pad
    a = embed(responsive_v3, x, sample_rate=24000)
    b = embed(responsive_v3, x, sample_rate=24000, pad_tail=True)
    assert a.frame.shape == b.frame.shape == (12, 512)
    np.testing.assert_array_equal(a.frame, b.frame)
    with pytest.raises(ValueError, match="pad_tail=True: does not apply to layer='scene'"):
        embed(responsive_v3, x, sample_rate=24000, layer="scene", pad_tail=True)


def test_cli_pad_tail_option_is_recorded_and_resume_tells_it_apart(tmp_path, authors_checkpoint, capsys):
    audio = tmp_path / "in"
    audio.mkdir()
    sf.write(audio / "a.wav", _noise(10.0), 24000)
    out = tmp_path / "out"
    args = ["embed", str(audio), "-o", str(out), "--model", str(authors_checkpoint)]
    assert main([*args, "--pad-tail"]) == 0
    with np.load(out / "a.npz") as z:
        assert z["frame"].shape[0] == 13 and json.loads(str(z["meta"]))["pad_tail"] is True
    assert main(args) == 0  # default now: recomputed, 12 frames
    assert "1 done" in capsys.readouterr().err
    with np.load(out / "a.npz") as z:
        assert z["frame"].shape[0] == 12
    assert main([*args, "--layer", "scene", "--pad-tail"]) == 2
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--pad-tail" in capsys.readouterr().out
